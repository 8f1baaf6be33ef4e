"""Learned retrieval: the retriever on bundles with known embeddings, and the server serving one.

Bundles come from `loadtest.harness.bundles`: the tower input of item ``p`` is the embedding of item ``q``, so a
user whose latest interaction is ``p`` is recommended ``q`` first, whatever the real-time sources say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from clients.client import AisleClient, ClientOptions
from feature_worker.catalog import Catalog
from feature_worker.fold import ADD_TO_CART, CLICK, VIEW
from feature_worker.state import UserState
from loadtest.harness.bundles import corrupt, one_hot, write_bundle
from loadtest.harness.server import ServerProcess, free_port
from protos.aisle.v1 import events_pb2
from server.engine import MODEL_VERSION
from server.retrieval import bundles, sources
from server.retrieval.bundles import BundleError
from server.retrieval.candidates import LEARNED, CandidateSet
from server.retrieval.item_index import ItemIndex
from server.retrieval.proposals import StateKey, UserProposals, state_key
from server.retrieval.two_tower import TwoTowerRetriever
from server.retrieval.warmer import ProposalWarmer
from tests.kafka_stack import AppliedClient, KafkaStack
from tests.polling import wait_for, wait_for_version
from tests.server.test_metrics import scrape
from tests.shop import BASE_TS, Shop, event, item, unique, view

MIN = 60_000
PAIRS = 5  # p_i leads to q_i
DIM = 2 * PAIRS


def pair_bundle(bundles_dir: Path, shop: Shop, version: str = "v1", max_len: int = 20) -> list[str]:
    """A bundle over p0..p4 and q0..q4 where an interaction with p_i makes q_i the best next item."""
    ids = [shop.id(f"p{i}") for i in range(PAIRS)] + [shop.id(f"q{i}") for i in range(PAIRS)]
    vectors = np.stack(
        [one_hot(DIM, PAIRS + i, 0.1) for i in range(PAIRS)] + [one_hot(DIM, i) for i in range(PAIRS)]
    )
    inputs = np.stack(
        [one_hot(DIM, i) for i in range(PAIRS)] + [one_hot(DIM, PAIRS + i) for i in range(PAIRS)]
    )
    write_bundle(bundles_dir, version, ids, vectors, inputs, max_len=max_len, params={"temperature": 0.1})
    return ids


def pair_index(shop: Shop) -> ItemIndex:
    """The catalog positions of p0..p4 and q0..q4, for calling the sources directly."""
    catalog = Catalog()
    catalog.upsert_many(item(shop.id(f"{kind}{i}")) for kind in "pq" for i in range(PAIRS))
    return ItemIndex(catalog)


def pair_catalog(client: AisleClient, shop: Shop) -> None:
    """Every item in its own category and brand, so the real-time content and brand sources stay quiet."""
    client.upsert_items(
        [
            item(
                shop.id(f"{kind}{i}"), category=shop.category(f"{kind}{i}"), brand=f"{shop.prefix}-{kind}{i}"
            )
            for kind in "pq"
            for i in range(PAIRS)
        ]
    )


# -- the retriever -------------------------------------------------------------------------------------------


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[TwoTowerRetriever, Shop]:
    """A retriever over `pair_bundle` with a sequence of 4, and the shop its ids come from."""
    shop = Shop()
    pair_bundle(tmp_path, shop, max_len=4)
    return TwoTowerRetriever.load(bundles.bundle(tmp_path, "v1")), shop


def tower_input(
    retriever: TwoTowerRetriever, recent: Sequence[tuple[int, int, str]], context: Sequence[str]
) -> tuple[list[list[int]], list[list[int]]]:
    """`encode`, returning the (items, types) it fed the tower."""
    session = retriever.session
    fed: list[dict[str, np.ndarray]] = []
    run = session.run

    def recording(outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        fed.append(feeds)
        found: list[np.ndarray] = run(outputs, feeds)
        return found

    session.run = recording  # records what the tower is given, and runs it as is
    try:
        assert retriever.encode(recent, context) is not None
    finally:
        del session.run  # back to the class's method
    return fed[0]["items"].tolist(), fed[0]["types"].tolist()


def test_encode_left_pads_drops_unknown_items_and_puts_the_page_last(
    loaded: tuple[TwoTowerRetriever, Shop],
) -> None:
    retriever, shop = loaded
    p = [shop.id(f"p{i}") for i in range(PAIRS)]
    recent = [(1, VIEW, p[0]), (2, CLICK, "unknown-item"), (3, ADD_TO_CART, p[1])]
    items, types = tower_input(retriever, recent, ())
    assert items == [[0, 0, 1, 2]]
    assert types == [[0, 0, VIEW, ADD_TO_CART]]
    # The page being viewed comes last, as a view; only the last max_len interactions are kept.
    items, types = tower_input(retriever, [*recent, (4, CLICK, p[2]), (5, CLICK, p[3])], (p[4],))
    assert items == [[2, 3, 4, 5]]
    assert types == [[ADD_TO_CART, CLICK, CLICK, VIEW]]
    # Shorter again: stale columns are cleared.
    items, _ = tower_input(retriever, [(1, CLICK, p[1])], ())
    assert items == [[0, 0, 0, 2]]
    assert retriever.encode([(1, VIEW, "unknown-item")], ()) is None
    assert retriever.encode([], ()) is None


def test_search_finds_the_learned_next_item_best_first(loaded: tuple[TwoTowerRetriever, Shop]) -> None:
    retriever, shop = loaded
    vector = retriever.encode([(1, VIEW, shop.id("p0")), (2, VIEW, shop.id("p3"))], ())
    assert vector is not None and vector.shape == (1, DIM) and vector.dtype == np.float32
    found = retriever.search(vector, 3, exclude={shop.id("p0"), shop.id("p3")})
    assert [item for item, _ in found[:2]] == [shop.id("q3"), shop.id("q0")]  # the newest counts most
    assert len(found) == 3 and shop.id("p0") not in dict(found)
    excluded = retriever.search(vector, 3, exclude={shop.id("q3")})
    assert excluded[0][0] == shop.id("q0") and shop.id("q3") not in dict(excluded)
    scores = [s for _, s in retriever.relative_scores(found)]
    assert scores[0] == 1.0 and all(0.0 < s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_the_source_adds_learned_candidates_by_relative_probability(
    loaded: tuple[TwoTowerRetriever, Shop],
) -> None:
    retriever, shop = loaded
    index = pair_index(shop)
    pool = CandidateSet()
    user = UserState(recent=[(1, CLICK, shop.id("p2"))])
    proposals = sources.learned_proposals(retriever, user, ())
    blocked = index.positions([shop.id("p2")])
    sources.two_tower(retriever, proposals, user, (), blocked, index, pool)
    pool.finish()
    scores = dict(zip(index.names(pool.positions), pool.scores[LEARNED].tolist()))
    best = max(scores, key=scores.__getitem__)
    assert best == shop.id("q2") and scores[best] == 1.0
    assert shop.id("p2") not in scores
    assert all(0.0 < s <= 1.0 for s in scores.values())
    # The ranker's column: the log relative probability, shifted so the best is the highest.
    logit = dict(zip(index.names(pool.positions), pool.extra_column("learned_logit").tolist()))
    assert max(logit, key=logit.__getitem__) == best
    empty = CandidateSet()
    nothing = sources.learned_proposals(retriever, None, ())
    sources.two_tower(
        retriever, nothing, None, (), index.positions([]), index, empty
    )  # nothing known: nothing added
    empty.finish()
    assert len(empty) == 0


def test_an_unchanged_state_s_proposals_are_remembered_and_a_changed_one_recomputed(
    loaded: tuple[TwoTowerRetriever, Shop],
) -> None:
    retriever, shop = loaded
    first = [(1, CLICK, shop.id("p1"))]

    def propose(
        recent: Sequence[tuple[int, int, str]], context: tuple[str, ...], key: StateKey
    ) -> UserProposals:
        return retriever.proposals(recent, context, key, 3, sources.TRANSITION_CANDIDATES)

    remembered = propose(first, (), ("u", 1, 1))
    assert retriever.label_positions is not None and len(remembered.labels) > 0
    assert retriever.item_ids[int(remembered.labels[0])] == shop.id("q1")
    # Same key: the remembered proposals, even if asked with other interactions (the key promises none changed).
    assert propose([(2, CLICK, shop.id("p3"))], (), ("u", 1, 1)) is remembered
    changed = propose([*first, (2, CLICK, shop.id("p3"))], (), ("u", 2, 2))
    assert retriever.item_ids[int(changed.labels[0])] == shop.id("q3")
    assert retriever.cache.get(("u", 1, 1)) is None  # one entry per user: the newer state replaced it
    # With a page being viewed, they are computed afresh and not remembered.
    with_page = propose(first, (shop.id("p4"),), ("v", 1, 1))
    assert retriever.item_ids[int(with_page.labels[0])] == shop.id("q4")
    assert retriever.cache.get(("v", 1, 1)) is None


def test_batched_proposals_equal_one_by_one(loaded: tuple[TwoTowerRetriever, Shop]) -> None:
    retriever, shop = loaded
    histories = [
        [(1, CLICK, shop.id("p0"))],
        [(1, VIEW, shop.id("p1")), (2, CLICK, shop.id("p4"))],
        [(1, VIEW, "unknown-item")],
        [(t, VIEW, shop.id(f"p{t % PAIRS}")) for t in range(30)],  # longer than max_len
        [(1, ADD_TO_CART, shop.id("q2")), (2, VIEW, shop.id("p2"))],
    ]
    states: list[tuple[StateKey, tuple[tuple[int, int, str], ...]]] = [
        ((f"u{i}", 1, 1), tuple(h)) for i, h in enumerate(histories)
    ]
    assert retriever.propose_many(states, 4, sources.TRANSITION_CANDIDATES) == len(states)
    assert retriever.propose_many(states, 4, sources.TRANSITION_CANDIDATES) == 0  # all remembered
    for key, recent in states:
        batched = retriever.cache.get(key)
        alone = TwoTowerRetriever.load(retriever.paths).proposals(list(recent), (), None, 4, 100)
        assert batched is not None
        np.testing.assert_array_equal(batched.labels, alone.labels)
        np.testing.assert_allclose(batched.scores, alone.scores, rtol=1e-6)
        assert batched.exhausted == alone.exhausted
    assert len(retriever.cache.get(("u2", 1, 1)).labels) == 0  # type: ignore[union-attr]  # nothing known


def test_a_request_excluding_most_of_the_remembered_search_searches_again(
    loaded: tuple[TwoTowerRetriever, Shop],
) -> None:
    retriever, shop = loaded
    index = pair_index(shop)
    recent = [(1, CLICK, shop.id("p1"))]
    full = retriever.proposals(recent, (), None, 10, 0)
    # A remembered search only three deep, of which the request excludes two.
    short = dataclasses.replace(
        full, labels=full.labels[:3], scores=full.scores[:3], searched=3, exhausted=False
    )
    excluded = index.positions([retriever.item_ids[int(label)] for label in full.labels[:2]])
    positions, _ = retriever.learned_positions(short, 3, index, excluded, recent, ())
    assert len(positions) == 3 and not set(positions.tolist()) & set(excluded.tolist())


def test_the_warmer_computes_touched_states_of_consenting_users_only(
    loaded: tuple[TwoTowerRetriever, Shop],
) -> None:
    retriever, shop = loaded
    warmer = ProposalWarmer(lambda: retriever, allowed=lambda user_id: user_id != "no-consent", batch=2)
    try:
        users = {
            f"w{i}": UserState(recent=[(1, CLICK, shop.id(f"p{i}"))], events_applied=1, last_seen_ms=1)
            for i in range(PAIRS)
        }
        users["no-consent"] = UserState(recent=[(1, CLICK, shop.id("p0"))], events_applied=1, last_seen_ms=1)
        asyncio.run(warmer.touch_all(users))
        assert warmer.wait_idle(timeout=60)
        for i in range(PAIRS):
            found = retriever.cache.get(state_key(f"w{i}", users[f"w{i}"]))
            assert found is not None and retriever.item_ids[int(found.labels[0])] == shop.id(f"q{i}")
        assert retriever.cache.get(state_key("no-consent", users["no-consent"])) is None
        # A newer state is computed when touched; the old one is no longer served.
        users["w0"].recent.append((2, CLICK, shop.id("p3")))
        users["w0"].events_applied = 2
        warmer.touch([("w0", users["w0"])])
        assert warmer.wait_idle(timeout=60)
        newer = retriever.cache.get(state_key("w0", users["w0"]))
        assert newer is not None and retriever.item_ids[int(newer.labels[0])] == shop.id("q3")
        assert warmer.computed == PAIRS + 1
    finally:
        warmer.close()


@pytest.mark.parametrize(
    "damage",
    ["missing-file", "corrupt-onnx", "corrupt-index", "wrong-dim", "too-few-ids", "bad-meta"],
)
def test_a_damaged_bundle_is_refused_with_a_bundle_error(tmp_path: Path, damage: str) -> None:
    pair_bundle(tmp_path, Shop())
    paths = bundles.bundle(tmp_path, "v1")
    meta = json.loads(paths.meta.read_text())
    if damage == "missing-file":
        paths.item_index.unlink()
    elif damage == "corrupt-onnx":
        corrupt(paths)
    elif damage == "corrupt-index":
        paths.item_index.write_bytes(b"\0" * 64)
    elif damage == "wrong-dim":
        paths.meta.write_text(json.dumps({**meta, "dim": DIM + 1}))
    elif damage == "too-few-ids":
        paths.item_ids.write_text("just-one\n")
    else:
        paths.meta.write_text(json.dumps({**meta, "max_len": "twenty"}))
    with pytest.raises(BundleError):
        TwoTowerRetriever.load(paths)


# -- the server ----------------------------------------------------------------------------------------------


def check_a_click_changes_the_next_answer(client: AisleClient, shop: Shop, version: str) -> None:
    user = unique("u")
    cold = client.recommend(user, 5, explain=True)
    assert cold.model_version == version
    assert not any("learned" in i.reasons for i in cold.items)  # nothing known of the user yet

    client.track([view(user, shop.id("p0"), BASE_TS)])
    first = client.recommend(user, 5, explain=True)
    assert first.items[0].item_id == shop.id("q0") and "learned" in first.items[0].reasons
    assert first.model_version == version

    client.track([event(user, events_pb2.CLICK, shop.id("p3"), BASE_TS + MIN)])
    second = client.recommend(user, 5, explain=True)
    assert [i.item_id for i in second.items[:2]] == [shop.id("q3"), shop.id("q0")]
    assert shop.id("p3") not in [i.item_id for i in second.items]  # what was just clicked is not news

    # The page being viewed is the newest interaction: its learned next item leads.
    page = client.recommend(user, 5, context_item_id=shop.id("p1"))
    assert page.items[0].item_id == shop.id("q1")
    similar = client.similar_items(shop.id("p4"), 3, explain=True)
    assert similar.items[0].item_id == shop.id("q4") and "learned" in similar.items[0].reasons


def test_without_a_promoted_bundle_the_server_answers_as_before(
    bundle_server: tuple[ServerProcess, Path],
) -> None:
    server, _ = bundle_server
    shop = Shop()
    with AisleClient(ClientOptions(target=server.target)) as client:
        pair_catalog(client, shop)
        user = unique("u")
        client.track([view(user, shop.id("p0"), BASE_TS)])
        answer = client.recommend(user, 5, explain=True)
        assert answer.model_version == MODEL_VERSION
        assert not any("learned" in i.reasons for i in answer.items)


def test_a_click_changes_the_very_next_learned_answer(bundle_server: tuple[ServerProcess, Path]) -> None:
    server, bundles_dir = bundle_server
    shop = Shop()
    pair_bundle(bundles_dir, shop, "pairs-1")
    with AisleClient(ClientOptions(target=server.target)) as client:
        pair_catalog(client, shop)
        bundles.promote(bundles_dir, "pairs-1")
        wait_for_version(client, unique("probe"), "pairs-1")
        check_a_click_changes_the_next_answer(client, shop, "pairs-1")


def test_a_bundle_promoted_before_start_serves_from_the_first_request(tmp_path: Path) -> None:
    bundles_dir = tmp_path / "bundles"
    shop = Shop()
    pair_bundle(bundles_dir, shop, "pairs-1")
    bundles.promote(bundles_dir, "pairs-1")
    server = ServerProcess(tmp_path / "server", env={"AISLE_BUNDLES_DIR": str(bundles_dir)}).start()
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            pair_catalog(client, shop)
            check_a_click_changes_the_next_answer(client, shop, "pairs-1")
    finally:
        server.stop()


def test_the_server_computes_learned_proposals_at_the_swap_and_when_the_fold_writes(tmp_path: Path) -> None:
    bundles_dir = tmp_path / "bundles"
    bundles_dir.mkdir()
    shop = Shop()
    pair_bundle(bundles_dir, shop, "pairs-1")
    server = ServerProcess(
        tmp_path / "server",
        metrics_port=free_port(),
        args=["--bundles", str(bundles_dir), "--bundle-poll-s", "0.05"],
    ).start()
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            pair_catalog(client, shop)
            before = [unique("before") for _ in range(3)]
            client.track([view(user, shop.id("p1"), BASE_TS) for user in before])
            bundles.promote(bundles_dir, "pairs-1")  # the swap computes the users stored before it
            wait_for_version(client, unique("probe"), "pairs-1")
            wait_for_proposals(server, computed=len(before))
            after = unique("after")
            client.track([view(after, shop.id("p2"), BASE_TS)])  # the fold's batch is computed too
            wait_for_proposals(server, computed=len(before) + 1)
            for user, expected in [*((u, "q1") for u in before), (after, "q2")]:
                answer = client.recommend(user, 3, explain=True)
                assert answer.items[0].item_id == shop.id(expected) and "learned" in answer.items[0].reasons
            assert proposal_metrics(server)["aisle_learned_proposals_cached"] >= len(before) + 1
            # An erasure drops what the bundle remembered of the customer.
            cached = proposal_metrics(server)["aisle_learned_proposals_cached"]
            receipt = client.erase_user(after)
            assert {step.store: step.action for step in receipt.steps}["proposals"] == "deleted"
            assert proposal_metrics(server)["aisle_learned_proposals_cached"] == cached - 1
            again = client.erase_user(after)
            assert {step.store: step.action for step in again.steps}["proposals"] == "nothing_held"
    finally:
        server.stop()


def proposal_metrics(server: ServerProcess) -> dict[str, float]:
    return {
        s.name: s.value for s in scrape(server.metrics_url) if s.name.startswith("aisle_learned_proposals")
    }


def wait_for_proposals(server: ServerProcess, computed: int) -> None:
    """Until the warmer has computed ``computed`` user states and has none pending."""

    def done() -> bool:
        found = proposal_metrics(server)
        return (
            found.get("aisle_learned_proposals_pending") == 0
            and found.get("aisle_learned_proposals_computed_total", 0) >= computed
        )

    wait_for(
        done,
        lambda: f"the warmer to compute {computed} user states: {proposal_metrics(server)}",
        timeout_s=30,
        interval_s=0.05,
    )


def test_a_broken_bundle_at_start_leaves_the_real_time_sources_serving(tmp_path: Path) -> None:
    bundles_dir = tmp_path / "bundles"
    shop = Shop()
    pair_bundle(bundles_dir, shop, "broken")
    corrupt(bundles.bundle(bundles_dir, "broken"))
    bundles.promote(bundles_dir, "broken")
    server = ServerProcess(tmp_path / "server", env={"AISLE_BUNDLES_DIR": str(bundles_dir)}).start()
    try:
        with AisleClient(ClientOptions(target=server.target)) as client:
            pair_catalog(client, shop)
            assert client.recommend(unique("u"), 5).model_version == MODEL_VERSION
        assert "refused bundle broken" in server.log_tail(200)
    finally:
        server.stop()


@pytest.mark.integration
def test_kafka_mode_serves_the_bundle_too(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    bundles_dir = tmp_path / "bundles"
    shop = Shop()
    pair_bundle(bundles_dir, shop, "pairs-1")
    bundles.promote(bundles_dir, "pairs-1")
    stack = KafkaStack(
        tmp_path / "stack", kafka_bootstrap, redis_url, AISLE_BUNDLES_DIR=str(bundles_dir)
    ).start()
    try:
        options = ClientOptions(target=stack.server.target, read_timeout_s=10, write_timeout_s=30)
        with AppliedClient(options, stack) as client:
            pair_catalog(client, shop)
            # The catalog reaches the server through its topic: wait until the items are known.
            user = unique("u")
            client.track([view(user, shop.id("p0"), BASE_TS)])
            for _ in range(600):
                answer = client.recommend(user, 5)
                if answer.items and answer.items[0].item_id == shop.id("q0"):
                    break
                time.sleep(0.05)
            check_a_click_changes_the_next_answer(client, shop, "pairs-1")
    finally:
        stack.stop()


def test_similar_items_reports_the_bundle(bundle_server: tuple[ServerProcess, Path]) -> None:
    server, bundles_dir = bundle_server
    shop = Shop()
    pair_bundle(bundles_dir, shop, "pairs-1")
    with AisleClient(ClientOptions(target=server.target)) as client:
        pair_catalog(client, shop)
        assert client.similar_items(shop.id("p4"), 3).model_version == MODEL_VERSION
        bundles.promote(bundles_dir, "pairs-1")
        wait_for_version(client, unique("probe"), "pairs-1")
        assert client.similar_items(shop.id("p4"), 3).model_version == "pairs-1"
