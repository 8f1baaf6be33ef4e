"""The Go, Java and Node examples of `clients/`, built by their own toolchains and run against a real server.

Each example is built by its Makefile target (`make clients-go`, ...: stubs generated from `protos/` by the
language's standard generator, dependencies from the toolchain's cache outside the clone), then run as a
process against a server that requires JWTs. It tracks a VIEW, asks for recommendations and reads the field
violations of a bad request; the test checks each step against the server's state through the Python client.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.client import AisleClient, ClientOptions
from clients.tokens import PrivateKey, mint
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import events_pb2
from tests.shop import BASE_TS, Shop, item, unique, view

ROOT = Path(__file__).resolve().parents[2]

#: Per language: the Makefile target that builds the example, and the command that runs it.
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "go": ("clients-go", [str(ROOT / "clients/go/bin/aisle-example")]),
    "java": ("clients-java", ["java", "-jar", str(ROOT / "clients/java/target/aisle-example.jar")]),
    "node": ("clients-node", ["node", str(ROOT / "clients/node/example.js")]),
}


@pytest.fixture(scope="module")
def admin(key: PrivateKey, auth_server: ServerProcess) -> Iterator[AisleClient]:
    options = ClientOptions(target=auth_server.target, token=mint(key, ["admin"]), read_timeout_s=10)
    with AisleClient(options) as client:
        yield client


@pytest.fixture(scope="module")
def shop(admin: AisleClient) -> Shop:
    """Items a, b, c; another customer viewed a then b, so b is co-viewed with a."""
    shop = Shop()
    admin.upsert_items([item(shop.id(name)) for name in "abc"])
    other = unique("other")
    admin.track([view(other, shop.id("a")), view(other, shop.id("b"), ts_ms=BASE_TS + 1000)])
    return shop


def build(target: str) -> None:
    """`make <target>`: generates the stubs and builds the example (a no-op when nothing changed)."""
    subprocess.run(["make", "-s", target], cwd=ROOT, check=True, timeout=900)


@pytest.mark.parametrize("language", sorted(EXAMPLES))
def test_example_tracks_recommends_and_reads_bad_request_details(
    language: str, key: PrivateKey, auth_server: ServerProcess, admin: AisleClient, shop: Shop
) -> None:
    target, command = EXAMPLES[language]
    build(target)
    user, event_id = unique(f"{language}-user"), unique("event")
    token = mint(key, ["events:write", "recommendations:read"], subject=f"{language}-partner")
    args = [
        "--target",
        auth_server.target,
        "--token",
        token,
        "--user",
        user,
        "--item",
        shop.id("a"),
        "--event-id",
        event_id,
    ]

    run = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()

    assert lines[0] == "tracked accepted=1 duplicates=0 rejected=0"
    profile = admin.profile(user)
    assert [(i.type, i.item_id) for i in profile.recent] == [(events_pb2.VIEW, shop.id("a"))]

    recommended = lines[1].removeprefix("recommended ").split()
    assert shop.id("b") in recommended  # co-viewed with the item just tracked
    assert recommended == [i.item_id for i in admin.recommend(user, k=5).items]
    assert lines[2].startswith("recommendation_id ") and len(lines[2].split()) == 2

    assert len(lines) == 4 and lines[3].startswith("invalid k: must be from 1 to 200"), run.stdout

    again = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "tracked accepted=1 duplicates=1 rejected=0"


def test_examples_need_a_token(auth_server: ServerProcess, shop: Shop) -> None:
    """Without a token the server refuses the first call, and the example fails loudly (non-zero exit)."""
    build("clients-go")
    _, command = EXAMPLES["go"]
    run = subprocess.run(
        [*command, "--target", auth_server.target, "--user", unique("anon")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0 and "Unauthenticated" in run.stderr
