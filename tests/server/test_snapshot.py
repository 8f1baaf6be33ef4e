"""Snapshots of the embedded state: a snapshot plus the journal's tail gives exactly what the whole journal gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from feature_worker.catalog import Catalog
from feature_worker.privacy.keystores.file import FileKeyStore
from feature_worker.privacy.vault import Vault
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from protos.aisle.v1 import events_pb2, users_pb2
from server.embedded.ingest import EmbeddedIngest
from server.embedded.journal import Journal
from server.embedded.snapshot import capture, freeze, load, write
from tests.sealing import dev_master_key
from tests.shop import BASE_TS, event, item

TYPES = [events_pb2.VIEW] * 6 + [
    events_pb2.CLICK,
    events_pb2.ADD_TO_CART,
    events_pb2.REMOVE_FROM_CART,
    events_pb2.PURCHASE,
    events_pb2.SEARCH,
]


def open_ingest(data: Path, sealed: bool, snapshots: bool, every: int = 16_384) -> EmbeddedIngest:
    data.mkdir(parents=True, exist_ok=True)
    """An embedded ingest on `data` (journal, keys, snapshot), as `server.app.build_embedded_engine` makes it."""
    keys = FileKeyStore(data / "keys.txt") if sealed else None
    vault = Vault(dev_master_key(), keys) if keys is not None else None
    return EmbeddedIngest(
        Journal(data / "journal.bin"),
        Catalog(),
        UserDirectory(),
        MemoryFeatureStore(),
        vault,
        keys,
        snapshot_path=data / "snapshot.bin" if snapshots else None,
        snapshot_every_bytes=every,
    )


async def write_shop(ingest: EmbeddedIngest, seed: int = 3, erasures: bool = True) -> None:
    """Catalog changes, customer records, events (some late, some repeated) and an erasure, interleaved."""
    rng = random.Random(seed)
    await ingest.upsert_items(
        [item(f"i{n}", category=f"d{n % 3}/c{n % 7}", brand=f"b{n % 5}") for n in range(80)]
    )
    for step in range(40):
        events = [
            event(
                f"u{rng.randrange(60)}",
                rng.choice(TYPES),
                f"i{rng.randrange(90)}",
                BASE_TS + (step * 50 + i) * 40_000 - rng.randrange(900_000),
                event_id=f"e{step}-{i}",
                price=rng.choice([3.0, 9.5]),
                quantity=1,
            )
            for i in range(50)
        ]
        events += events[:3]  # a client's retry: applied once
        await ingest.events(events)
        if step % 7 == 3:
            await ingest.upsert_items([item(f"i{80 + step}", category="d9/c1", brand="b9")])
            await ingest.delete_items([f"i{rng.randrange(80)}"])
        if step % 9 == 4:
            await ingest.upsert_user(users_pb2.User(user_id=f"u{step}", attributes={"tier": "gold"}))
        if step == 25 and erasures:
            await erase(ingest, "u7")


async def erase(ingest: EmbeddedIngest, user_id: str) -> None:
    """An erasure, as `CustomerRights` runs it."""
    await ingest.delete_user(user_id)
    ingest.users.delete_user(user_id)
    await ingest.store.delete_user(user_id)
    if ingest.vault is not None:
        await ingest.vault.delete_user(user_id)


def state(ingest: EmbeddedIngest) -> dict[str, object]:
    store = ingest.store.features
    return {
        # In order (dict order is part of the state), and as bytes: the live states change in place.
        "users": [(u, s.to_bytes(), s.applied_to_bytes()) for u, s in store.users.items()],
        "popularity": list(store.popularity.items()),
        "trend": [(day, list(weights.items())) for day, weights in store.trend.items()],
        "covis": [(item_id, list(neighbours.items())) for item_id, neighbours in store.covis.items()],
        "clock": store.clock_ms,
        "catalog": [i.SerializeToString() for i in ingest.catalog.records()],
        "directory": [u.SerializeToString() for u in ingest.users.records()],
    }


@pytest.mark.parametrize(
    ("sealed", "erasures"),
    [(False, True), (True, False), (True, True)],
    ids=["clear", "sealed", "sealed-with-erasures"],
)
async def test_a_snapshot_and_the_journal_tail_give_exactly_the_whole_replay(
    tmp_path: Path, sealed: bool, erasures: bool
) -> None:
    writer = open_ingest(tmp_path, sealed, snapshots=True)
    await writer.recover()
    await write_shop(writer, erasures=erasures)
    if writer._snapshotting is not None:
        await writer._snapshotting
    writer.snapshot_every_bytes = 1 << 30
    await write_shop(writer, seed=4, erasures=erasures)  # the tail, after the last snapshot
    if erasures:
        assert "u8" in writer.store.features.users
        await erase(writer, "u8")  # erased in the tail: gone although the snapshot holds them
    snapshot_at, end = writer.snapshot_offset, writer.journal.size
    # A kill: no snapshot on the way out (the files closed only to keep the test tidy).
    writer.journal.close()
    if writer.reader.keys is not None:
        writer.reader.keys.close()
    assert 0 < snapshot_at < end, "the shop should leave a snapshot and a tail after it"

    restarted = open_ingest(tmp_path, sealed, snapshots=True, every=0)
    tail = await restarted.recover()
    replayed = open_ingest(tmp_path, sealed, snapshots=False)
    whole = await replayed.recover()
    assert 0 < tail < whole
    got, want = state(restarted), state(replayed)
    if sealed and erasures:
        # Sealed events of an erased customer cannot be opened by any replay, but the item counters they added
        # while the customer was there stay in a snapshot (as in the server that took them): only those differ.
        customers = ("users", "catalog", "directory")
        assert {k: got[k] for k in customers} == {k: want[k] for k in customers}
    else:
        assert got == want
    if erasures:
        assert "u8" not in restarted.store.features.users and len(restarted.store.features.users) > 50
    for ingest in (restarted, replayed):
        await ingest.close()


async def test_a_damaged_snapshot_is_ignored_and_the_journal_replayed_whole(tmp_path: Path) -> None:
    writer = open_ingest(tmp_path, sealed=False, snapshots=True)
    await writer.recover()
    await write_shop(writer)
    await writer.close()  # a clean stop: the snapshot covers the whole journal
    snapshot = tmp_path / "snapshot.bin"
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))

    restarted = open_ingest(tmp_path, sealed=False, snapshots=True, every=0)
    replayed = open_ingest(tmp_path, sealed=False, snapshots=False)
    assert await restarted.recover() == await replayed.recover() > 0
    assert state(restarted) == state(replayed)
    for ingest in (restarted, replayed):
        await ingest.close()


async def test_a_clean_stop_leaves_nothing_to_replay(tmp_path: Path) -> None:
    writer = open_ingest(tmp_path, sealed=True, snapshots=True)
    await writer.recover()
    await write_shop(writer, erasures=False)
    await writer.close()
    restarted = open_ingest(tmp_path, sealed=True, snapshots=True)
    replayed = open_ingest(tmp_path, sealed=True, snapshots=False)
    assert await restarted.recover() == 0
    await replayed.recover()
    assert state(restarted) == state(replayed)
    for ingest in (restarted, replayed):
        await ingest.close()


async def test_a_snapshot_holds_the_moment_it_was_frozen_while_changes_go_on(tmp_path: Path) -> None:
    writer = open_ingest(tmp_path / "a", sealed=False, snapshots=True, every=0)
    await writer.recover()
    await write_shop(writer, erasures=False)
    then = state(writer)
    frozen = freeze(writer.journal.size, writer.catalog, writer.users, writer.store.features)
    await write_shop(writer, seed=4)  # while the snapshot is being written: users, items, counters all change
    assert state(writer) != then
    write(tmp_path / "snapshot.bin", capture(frozen, None))
    writer.store.features.thaw()

    loaded = open_ingest(tmp_path / "b", sealed=False, snapshots=False)
    assert (
        load(tmp_path / "snapshot.bin", loaded.catalog, loaded.users, loaded.store.features, None)
        == frozen.journal_offset
    )
    assert state(loaded) == then
    for ingest in (writer, loaded):
        await ingest.close()
