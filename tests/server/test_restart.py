"""Restart mid-stream: a server killed and restarted reaches exactly the state of an uninterrupted run."""

from __future__ import annotations

import random
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from clients.client import AisleClient, ClientOptions
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2
from tests.shop import BASE_TS, event, item

USERS = [f"u{i}" for i in range(40)]
ITEMS = [f"i{i}" for i in range(30)]
TYPES = [events_pb2.VIEW] * 6 + [
    events_pb2.CLICK,
    events_pb2.ADD_TO_CART,
    events_pb2.REMOVE_FROM_CART,
    events_pb2.PURCHASE,
]


def stream(seed: int = 7, n: int = 3000) -> list[events_pb2.Event]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        # Timestamps mostly increase, with some late arrivals placed in the past.
        ts = BASE_TS + i * 20_000 - (rng.randrange(600_000) if rng.random() < 0.1 else 0)
        events.append(
            event(
                rng.choice(USERS),
                rng.choice(TYPES),
                rng.choice(ITEMS),
                ts,
                event_id=f"ev{i}",
                price=rng.choice([5.0, 12.5]),
                quantity=1,
            )
        )
    return events


def catalog() -> list[catalog_pb2.Item]:
    return [
        item(i, category=f"dept{n % 3}/cat{n % 6}", brand=f"brand{n % 4}", in_stock=n % 11 != 0)
        for n, i in enumerate(ITEMS)
    ]


def state_of(target: str) -> dict[str, object]:
    with AisleClient(ClientOptions(target=target, read_timeout_s=10)) as client:
        out: dict[str, object] = {}
        for user in USERS:
            profile = MessageToDict(client.profile(user))
            recs = client.recommend(user, 10, explain=True)
            out[user] = {
                "profile": profile,
                "recs": [(i.item_id, round(i.score, 6), list(i.reasons)) for i in recs.items],
            }
        return out


def send(target: str, events: list[events_pb2.Event], batch: int = 100) -> None:
    with AisleClient(ClientOptions(target=target, write_timeout_s=30)) as client:
        for start in range(0, len(events), batch):
            assert client.track(events[start : start + batch]).accepted == len(events[start : start + batch])


def test_kill_and_restart_equals_uninterrupted_run(tmp_path: Path) -> None:
    events = stream()
    reference = ServerProcess(tmp_path / "reference").start()
    try:
        with AisleClient(ClientOptions(target=reference.target)) as client:
            client.upsert_items(catalog())
        send(reference.target, events)
        expected = state_of(reference.target)
    finally:
        reference.stop()

    crashing = ServerProcess(tmp_path / "crashing").start()
    try:
        with AisleClient(ClientOptions(target=crashing.target)) as client:
            client.upsert_items(catalog())
        send(crashing.target, events[:1700])
        crashing.kill()
        crashing.start()
        # At-least-once producers resend what they are unsure of: the last batch again.
        send(crashing.target, events[1600:])
        crashing.restart()  # and a clean restart on top
        assert state_of(crashing.target) == expected
    finally:
        crashing.stop()


def test_torn_journal_tail_is_cut_off(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path / "torn").start()
    try:
        send(process.target, stream(n=200))
        process.kill()
        journal = tmp_path / "torn" / "journal.bin"
        with open(journal, "ab") as f:
            f.write(b"\x10\x00\x00\x00partial")  # a record header and half a payload, as a crash leaves it
        process.start()
        with AisleClient(ClientOptions(target=process.target)) as client:
            applied = sum(client.profile(u).events_applied for u in USERS)
        assert applied == 200
    finally:
        process.stop()
