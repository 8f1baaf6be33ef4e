"""Bundle hot swap: promotions, rollbacks and broken bundles while requests keep coming.

Bundles A and B know the same seed items but lead to disjoint item sets (A's index holds only the ``a`` items,
B's only the ``b`` items), so every answer shows which bundle made it: its learned items must all belong to
the version it reports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.client import AisleClient, ClientOptions
from loadtest.harness.bundles import corrupt, one_hot, write_bundle
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import recommendations_pb2
from server.retrieval import bundles
from server.retrieval.bundles import BundlePaths
from server.retrieval.registry import ModelRegistry
from server.retrieval.two_tower import TwoTowerRetriever, load
from tests.polling import wait_for, wait_for_version
from tests.shop import BASE_TS, Shop, item, unique, view

SEEDS = 3
PER_SET = 8
DIM = 4


def sided_bundle(bundles_dir: Path, shop: Shop, version: str, side: str) -> set[str]:
    """Bundle ``version`` over the seeds and the items of ``side`` ("a" or "b"); returns that side's items.

    Any seed leads along axis 0, where the side's items lie (in a fixed order); the seeds lie opposite.
    """
    seeds = [shop.id(f"s{i}") for i in range(SEEDS)]
    members = [shop.id(f"{side}{j}") for j in range(PER_SET)]
    vectors = [one_hot(DIM, 0, -1.0)] * SEEDS + [one_hot(DIM, 0, 1.0 - 0.05 * j) for j in range(PER_SET)]
    inputs = [one_hot(DIM, 0)] * SEEDS + [one_hot(DIM, 1)] * PER_SET
    write_bundle(
        bundles_dir,
        version,
        seeds + members,
        np.stack(vectors),
        np.stack(inputs),
        params={"temperature": 0.1},
    )
    return set(members)


def sided_catalog(client: AisleClient, shop: Shop) -> None:
    names = [f"s{i}" for i in range(SEEDS)] + [f"{side}{j}" for side in "ab" for j in range(PER_SET)]
    client.upsert_items(
        [item(shop.id(n), category=shop.category(n), brand=f"{shop.prefix}-{n}") for n in names]
    )


def learned_items(response: recommendations_pb2.RecommendResponse) -> set[str]:
    return {i.item_id for i in response.items if "learned" in i.reasons}


@pytest.fixture
def swapping(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Shop, dict[str, set[str]]]]:
    """A server serving bundle A (promoted before start); B written too; a shop with both item sets."""
    bundles_dir = tmp_path / "bundles"
    shop = Shop()
    sides = {"A": sided_bundle(bundles_dir, shop, "A", "a"), "B": sided_bundle(bundles_dir, shop, "B", "b")}
    bundles.promote(bundles_dir, "A")
    server = ServerProcess(
        tmp_path / "server", args=["--bundles", str(bundles_dir), "--bundle-poll-s", "0.02"]
    ).start()
    yield server, bundles_dir, shop, sides
    server.stop()


def test_hot_swaps_under_load_never_fail_nor_mix_versions(
    swapping: tuple[ServerProcess, Path, Shop, dict[str, set[str]]],
) -> None:
    server, bundles_dir, shop, sides = swapping
    options = ClientOptions(target=server.target, read_timeout_s=10)
    with AisleClient(options) as client:
        sided_catalog(client, shop)
        user = unique("u")
        client.track([view(user, shop.id("s0"), BASE_TS)])

        stop = threading.Event()
        answers: list[recommendations_pb2.RecommendResponse] = []
        errors: list[Exception] = []

        def fire() -> None:
            with AisleClient(options) as loader:
                while not stop.is_set():
                    try:
                        answers.append(loader.recommend(user, 5, explain=True))
                    except Exception as exc:  # noqa: BLE001 - every failure fails the test, reported below
                        errors.append(exc)

        threads = [threading.Thread(target=fire) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for version in ["B", "A", "B", "A", "B", "A"]:
                bundles.promote(bundles_dir, version)
                wait_for_version(client, unique("probe"), version)
                # ... and the firing clients have had answers from it, so every swap happened under load.
                seen = len(answers)
                while not errors and not any(a.model_version == version for a in answers[seen:]):
                    time.sleep(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    assert not errors, errors[:3]
    assert {a.model_version for a in answers} == {"A", "B"}
    for answer in answers:
        top = answer.items[0]
        assert "learned" in top.reasons and top.item_id in sides[answer.model_version]
        assert learned_items(answer) <= sides[answer.model_version], answer


def test_a_broken_bundle_is_refused_and_the_old_one_keeps_serving(
    swapping: tuple[ServerProcess, Path, Shop, dict[str, set[str]]],
) -> None:
    server, bundles_dir, shop, sides = swapping
    broken = sided_bundle(bundles_dir, shop, "C-broken", "b")
    assert broken
    corrupt(bundles.bundle(bundles_dir, "C-broken"))
    with AisleClient(ClientOptions(target=server.target)) as client:
        sided_catalog(client, shop)
        user = unique("u")
        client.track([view(user, shop.id("s1"), BASE_TS)])
        wait_for_version(client, user, "A")
        bundles.promote(bundles_dir, "C-broken")
        wait_for(
            lambda: "refused bundle C-broken" in server.log_tail(400),
            lambda: f"the broken bundle to be refused:\n{server.log_tail()}",
            timeout_s=20,
            interval_s=0.02,
        )
        answer = client.recommend(user, 5, explain=True)
        assert answer.model_version == "A"
        assert learned_items(answer) and learned_items(answer) <= sides["A"]
        # A good bundle promoted after the broken one is served.
        bundles.promote(bundles_dir, "B")
        wait_for_version(client, user, "B")
        assert learned_items(client.recommend(user, 5, explain=True)) <= sides["B"]


def test_rollback_serves_the_previous_bundle(
    swapping: tuple[ServerProcess, Path, Shop, dict[str, set[str]]],
) -> None:
    server, bundles_dir, shop, sides = swapping
    with AisleClient(ClientOptions(target=server.target)) as client:
        sided_catalog(client, shop)
        user = unique("u")
        client.track([view(user, shop.id("s2"), BASE_TS)])
        bundles.promote(bundles_dir, "B")
        wait_for_version(client, user, "B")
        assert bundles.rollback(bundles_dir) == "A"
        wait_for_version(client, user, "A")
        answer = client.recommend(user, 5, explain=True)
        assert learned_items(answer) and learned_items(answer) <= sides["A"]


# -- the registry itself, in process -------------------------------------------------------------------------


async def test_the_registry_loads_once_per_promotion_and_keeps_the_last_good_bundle(tmp_path: Path) -> None:
    shop = Shop()
    sided_bundle(tmp_path, shop, "A", "a")
    sided_bundle(tmp_path, shop, "B", "b")
    sided_bundle(tmp_path, shop, "C", "b")
    corrupt(bundles.bundle(tmp_path, "C"))
    loads: list[str] = []

    def counting(paths: BundlePaths) -> TwoTowerRetriever:
        loads.append(paths.version)
        return load(paths)

    registry = ModelRegistry(tmp_path, poll_s=60, loader=counting)
    assert not await registry.check() and registry.current is None  # nothing promoted
    bundles.promote(tmp_path, "A")
    assert await registry.check() and registry.version == "A"
    assert not await registry.check()  # unchanged: not loaded again
    bundles.promote(tmp_path, "C")
    assert not await registry.check() and registry.version == "A"
    assert not await registry.check()  # a refused version is not retried while it stays promoted
    bundles.promote(tmp_path, "B")
    assert await registry.check() and registry.version == "B"
    bundles.rollback(tmp_path)  # back to C: still refused, B keeps serving
    assert not await registry.check() and registry.version == "B"
    bundles.rollback(tmp_path)  # back to A
    assert await registry.check() and registry.version == "A"
    assert loads == ["A", "C", "B", "C", "A"]
    (tmp_path / bundles.CURRENT).write_text("../etc\n")  # garbled: logged, A keeps serving
    assert not await registry.check() and registry.version == "A"
    registry.start()
    await registry.close()
