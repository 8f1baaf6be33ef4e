"""Embedded ingestion: journal first, then apply in process (the fold, the catalog, the users); and the
journal's records appended to the batch store (`JournalLake`) when the server has one (`AISLE_LAKE_DIR`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.lake.schema import (
    EVENTS,
    ITEMS,
    TABLES,
    USERS,
    EventRows,
    ItemRows,
    Rows,
    UserRows,
    now_ms,
)
from feature_worker.lake.writer import MAX_BACKOFF_S, Lake, append_retrying
from feature_worker.privacy.keystores.file import FileKeyStore
from feature_worker.privacy.sealing import EVENT, USER, seal
from feature_worker.privacy.vault import Vault
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from protos.aisle.v1 import catalog_pb2, events_pb2, sealed_pb2, users_pb2
from server.embedded.journal import Journal, RecordKind, records
from server.embedded.records import JournalReader
from server.embedded.snapshot import Sealer, SnapshotDamaged, capture, covered, freeze, load, write
from server.ingest import Ingest
from server.retrieval.warmer import ProposalWarmer

log = logging.getLogger(__name__)


class EmbeddedIngest(Ingest):
    """Writes each change to the journal, then applies it; `recover` replays the journal on start.

    Ordering: a change is journaled before it is applied and before the caller is answered, and the
    journal is replayed in write order, so a restarted server reaches exactly the state it had.

    With a `vault` (encryption on) events and customer records are journaled sealed with their customer's
    data key, kept in `keys` (a file beside the journal; a new customer's key is on disk before the record
    that needs it). Erasing a customer destroys the key: replay can no longer open what they sent.

    With a `snapshot_path`, the state is also written there (`server.embedded.snapshot`) each time the journal
    has grown by `snapshot_every_bytes` since the last snapshot, after a start that replayed more than that, and
    on `close`; `recover` then loads it and replays only the journal after it. A snapshot is captured between
    two changes, on the event loop (the state must not move while it is read), and written in a thread.
    """

    erasure_step = (
        "journal",
        "marked",
        "erasure record journaled: replay drops the customer, and their sealed records cannot be opened",
    )
    events_held_in = "journal"

    def __init__(
        self,
        journal: Journal,
        catalog: Catalog,
        users: UserDirectory,
        store: MemoryFeatureStore,
        vault: Vault | None = None,
        keys: FileKeyStore | None = None,
        snapshot_path: Path | None = None,
        snapshot_every_bytes: int = 64 << 20,
    ) -> None:
        self.journal = journal
        self.snapshot_path = snapshot_path
        self.snapshot_every_bytes = snapshot_every_bytes
        key_file = keys.file if keys is not None else None
        self._sealer = Sealer(vault, key_file) if vault is not None and key_file is not None else None
        #: The journal offset the newest snapshot covers (0: none).
        self.snapshot_offset = 0
        self._snapshotting: asyncio.Task[None] | None = None
        self.catalog = catalog
        self.users = users
        self.store = store
        self.vault = vault
        self.reader = JournalReader(vault, key_file)
        #: Appends the journal to the batch store, when the server has one (set once recovered).
        self.lake: JournalLake | None = None
        #: Computes the served bundle's proposals for the users each batch changed (set once models load).
        self.warmer: ProposalWarmer | None = None

    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        vault = self.vault
        if vault is None:
            self.journal.append(RecordKind.EVENTS, events_pb2.TrackRequest(events=events).SerializeToString())
        else:
            keys = await vault.keys({event.user_id for event in events}, create=True)
            batch = sealed_pb2.SealedBatch(
                records=[
                    sealed_pb2.SealedRecord(
                        user_id=event.user_id,
                        value=seal(keys[event.user_id].aead, event.user_id, EVENT, event.SerializeToString()),
                    )
                    for event in events
                ]
            )
            self.journal.append(RecordKind.SEALED_EVENTS, batch.SerializeToString())
        result = await apply_events(self.store, self.catalog, events)
        if self.warmer is not None:
            users = self.store.features.users
            self.warmer.touch(
                (user_id, users[user_id]) for user_id in {e.user_id for e in events} if user_id in users
            )
        self._maybe_snapshot()
        return result.duplicates

    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> None:
        self.journal.append(
            RecordKind.UPSERT_ITEMS, catalog_pb2.UpsertItemsRequest(items=items).SerializeToString()
        )
        self.catalog.upsert_many(items)
        self._maybe_snapshot()

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        self.journal.append(
            RecordKind.DELETE_ITEMS, catalog_pb2.DeleteItemsRequest(item_ids=item_ids).SerializeToString()
        )
        deleted = self.catalog.delete(item_ids)
        self._maybe_snapshot()
        return deleted

    def _maybe_snapshot(self) -> None:
        """Start a snapshot when the journal has grown by `snapshot_every_bytes` since the last one."""
        if (
            self.snapshot_path is None
            or self.snapshot_every_bytes <= 0
            or self.journal.size - self.snapshot_offset < self.snapshot_every_bytes
            or (self._snapshotting is not None and not self._snapshotting.done())
        ):
            return
        self._snapshotting = asyncio.get_running_loop().create_task(self.snapshot())

    async def snapshot(self) -> None:
        """Freeze the state now (on the loop, between two changes: milliseconds), then encode and write it in a
        thread while requests go on (the store copies what they change: `MemoryFeatures.freeze`)."""
        path = self.snapshot_path
        if path is None:
            return
        offset = self.journal.size
        started = time.perf_counter()
        state = freeze(offset, self.catalog, self.users, self.store.features)
        frozen = time.perf_counter() - started
        sealer = self._sealer
        try:
            size = await asyncio.to_thread(lambda: write(path, capture(state, sealer)))
        finally:
            self.store.features.thaw()
        self.snapshot_offset = offset
        log.info(
            "snapshot of the state at journal byte %d: %d bytes (frozen in %.3f s on the loop, encoded and "
            "written in %.2f s in a thread)",
            offset,
            size,
            frozen,
            time.perf_counter() - started - frozen,
        )

    async def upsert_user(self, user: users_pb2.User) -> None:
        vault = self.vault
        if vault is None:
            self.journal.append(RecordKind.UPSERT_USER, user.SerializeToString())
        else:
            key = (await vault.keys([user.user_id], create=True))[user.user_id]
            record = sealed_pb2.SealedRecord(
                user_id=user.user_id, value=seal(key.aead, user.user_id, USER, user.SerializeToString())
            )
            self.journal.append(RecordKind.SEALED_USER, record.SerializeToString())
        self.users.upsert(user)
        self._maybe_snapshot()

    async def delete_user(self, user_id: str) -> bool:
        """Journal the erasure: at replay it drops whatever clear records (written with encryption off) held of
        the customer; sealed ones cannot be opened once their key is destroyed. True: always journaled."""
        self.journal.append(RecordKind.ERASE_USER, user_id.encode())
        return True

    async def held_events(self, user_id: str) -> list[events_pb2.Event]:
        """The customer's events the journal still holds readably, oldest first (a scan of the journal)."""
        return await asyncio.to_thread(self._held_events, user_id)

    def _held_events(self, user_id: str) -> list[events_pb2.Event]:
        reader = JournalReader(self.reader.vault, self.reader.keys)
        held: list[events_pb2.Event] = []
        for kind, payload in self.journal.replay():
            if kind is RecordKind.ERASE_USER and payload.decode() == user_id:
                held.clear()
            elif kind is RecordKind.EVENTS:
                held.extend(e for e in reader.events(kind, payload) if e.user_id == user_id)
            elif kind is RecordKind.SEALED_EVENTS:
                batch = sealed_pb2.SealedBatch(
                    records=[
                        r for r in sealed_pb2.SealedBatch.FromString(payload).records if r.user_id == user_id
                    ]
                )
                if batch.records:
                    held.extend(reader.events(kind, batch.SerializeToString()))
        return held

    async def recover(self) -> int:
        """Load the snapshot, if any, then replay the journal after it into the in-process state (empty before);
        returns the journal records replayed."""
        start = self._load_snapshot()
        count = 0
        size = self.journal.size - start
        with tqdm(
            total=size, unit="B", unit_scale=True, desc="replaying journal", disable=size < 1 << 20
        ) as bar:
            reader = self.reader
            for kind, payload in self.journal.replay(start):
                if kind is RecordKind.EVENTS or kind is RecordKind.SEALED_EVENTS:
                    events = reader.events(kind, payload)
                    if events:
                        await apply_events(self.store, self.catalog, events)
                elif kind is RecordKind.UPSERT_ITEMS:
                    self.catalog.upsert_many(catalog_pb2.UpsertItemsRequest.FromString(payload).items)
                elif kind is RecordKind.DELETE_ITEMS:
                    self.catalog.delete(catalog_pb2.DeleteItemsRequest.FromString(payload).item_ids)
                elif kind is RecordKind.UPSERT_USER or kind is RecordKind.SEALED_USER:
                    user = reader.user(kind, payload)
                    if user is not None:
                        self.users.upsert(user)
                elif kind is RecordKind.ERASE_USER:
                    user_id = payload.decode()
                    await self.store.delete_user(user_id)
                    self.users.delete_user(user_id)
                count += 1
                bar.update(len(payload) + 9)
        if count:
            log.info(
                "replayed %d journal records from %s from byte %d (%d sealed payloads of erased customers "
                "skipped)",
                count,
                self.journal.path,
                start,
                self.reader.shredded,
            )
        if (
            self.snapshot_path is not None
            and self.snapshot_every_bytes > 0
            and size >= self.snapshot_every_bytes
        ):
            await self.snapshot()  # the next start need not replay this stretch again
        return count

    def _load_snapshot(self) -> int:
        """The journal offset to replay from: the snapshot's, once loaded; 0 without a usable snapshot."""
        path = self.snapshot_path
        if path is None or not path.exists():
            return 0
        try:
            if covered(path) > self.journal.size:
                # The journal lost its end (a machine crash without fsync) or is a new one: it is the truth, and
                # records appended to it from now on would hide behind the snapshot's offset. Replay it whole.
                log.warning(
                    "the snapshot %s covers %d bytes of journal but the journal has %d: replaying the "
                    "whole journal",
                    path,
                    covered(path),
                    self.journal.size,
                )
                return 0
            offset = load(path, self.catalog, self.users, self.store.features, self._sealer)
        except SnapshotDamaged as exc:
            log.warning("ignoring the snapshot %s (%s): replaying the whole journal", path, exc)
            return 0
        self.snapshot_offset = offset
        log.info("loaded the snapshot %s (journal byte %d)", path, offset)
        return offset

    async def close(self) -> None:
        if self._snapshotting is not None:
            await self._snapshotting
        if (
            self.snapshot_path is not None
            and self.snapshot_every_bytes > 0
            and self.journal.size > self.snapshot_offset
        ):
            await self.snapshot()  # a clean stop: the next start replays nothing
        self.journal.close()
        if self.lake is not None:
            await asyncio.to_thread(self.lake.close)
        if self.reader.keys is not None:
            self.reader.keys.close()


#: The journal's source id in the batch store's commits (`Lake.append`).
JOURNAL_APP_ID = "aisle.journal"
#: A table that no record touched is still moved forward once it lags this far, so that a restart does not
#: scan a long stretch of journal for it.
_MAX_LAG_BYTES = 64 * 1024 * 1024


class JournalLake:
    """Appends the journal's records to the batch store from a thread of its own, off the request path.

    The thread tails the journal file (the requests only append to it, as before): it reads the complete
    records after the position recorded in the lake, turns them into rows (`events`, `items`, `users`) and
    appends them when `batch_max` rows are waiting or `flush_s` seconds after the first of them, and once
    more on `close`. Each append records, in the same Delta commit, the journal offset just past the last
    record it covers (`Lake.append`), per table. On start the thread resumes at the recorded offsets, so
    after a crash the records journaled but not yet in the lake are appended, and the others are not: every
    accepted change lands exactly once. A resent event is a second journal record and lands again; readers
    drop repeated event ids (`trainer.data.delta`), as the fold does. A journal shorter than the recorded
    offset lost its end (a machine crash without fsync: the lake has those records) or is a new one (a reset
    data dir): everything written to it from now on is new, and is appended. (A different, non-empty journal
    copied into the data dir would not be recognised: give the server a new lake directory then.)

    Item and user changes carry no time in the journal: `ts_ms` is when the thread read them (moments after
    they were accepted; after a crash, the restart). Memory: at most `batch_max` rows (plus one request).
    If the lake cannot be written the thread retries, and the journal keeps everything meanwhile.

    Sealed records are opened with `reader`; those of erased customers cannot be, and never land. Events of
    customers whose consent says no to analytics (`users`, as the thread reads them) are withheld.
    """

    def __init__(
        self,
        journal_path: Path,
        lake: Lake,
        batch_max: int,
        flush_s: float,
        reader: JournalReader | None = None,
        users: UserDirectory | None = None,
    ) -> None:
        self.path = journal_path
        self.lake = lake
        self.reader = reader or JournalReader(None, None)
        self.users = users
        #: Events withheld for want of analytics consent.
        self.withheld = 0
        self.batch_max = batch_max
        self.flush_s = flush_s
        #: Per table: the journal offset recorded in the lake (-1: none), which the next append expects.
        self.recorded: dict[str, int] = {}
        for name in TABLES:
            position = lake.position(name, JOURNAL_APP_ID)
            self.recorded[name] = -1 if position is None else position
        #: Per table: records ending at or before this offset are in the table already.
        self._have = dict(self.recorded)
        # Read now, before the server accepts a write: the journal's length tells its old records from new ones.
        size = self.path.stat().st_size if self.path.exists() else 0
        if max(self.recorded.values()) > size:
            # The journal lost its end (a machine crash without fsync) or was replaced by a new one (a reset
            # data dir): what it holds past `size` now is new, and what it lost is in the lake already.
            log.warning(
                "the batch store records journal offsets %s but %s has %d bytes; appending the "
                "journal from there",
                self.recorded,
                self.path,
                size,
            )
            self._have = {name: min(end, size) for name, end in self.recorded.items()}
        self._start_at = max(0, min(self._have.values()))
        self.appended = dict.fromkeys(TABLES, 0)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aisle-journal-lake", daemon=True)
        self.error: BaseException | None = None

    @classmethod
    def start(
        cls,
        journal_path: Path,
        lake_dir: str,
        batch_max: int,
        flush_s: float,
        reader: JournalReader | None = None,
        users: UserDirectory | None = None,
    ) -> JournalLake:
        """Open (or create) the lake under `lake_dir` and start tailing the journal."""
        writer = cls(journal_path, Lake(lake_dir), batch_max, flush_s, reader, users)
        writer._thread.start()
        return writer

    def close(self) -> None:
        """Append everything journaled so far, then stop the thread (blocking)."""
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._tail()
        except BaseException as exc:  # a thread's error would vanish: log it (the journal still has it all)
            self.error = exc
            log.exception("the batch store writer stopped; the journal keeps every record for the next start")

    def _tail(self) -> None:
        position = self._start_at
        if position:
            log.info("batch store: resuming the journal at byte %d", position)
        rows = _empty_rows()
        waiting, since = 0, 0.0
        with open(self.path, "rb") as journal:
            while True:
                closing = (
                    self._closing.is_set()
                )  # read before the journal: what was written before close lands
                journal.seek(position)
                start, read = position, 0
                for kind, payload, end in records(journal):  # stops before a record still being written
                    read = end
                    waiting += self._add(rows, kind, payload, start + end)
                    if waiting and not since:
                        since = time.monotonic()
                    if waiting >= self.batch_max:
                        self._flush(rows, start + end)
                        rows, waiting, since = _empty_rows(), 0, 0.0
                position = start + read
                if waiting and (closing or time.monotonic() - since >= self.flush_s):
                    self._flush(rows, position)
                    rows, waiting, since = _empty_rows(), 0, 0.0
                if closing:
                    return
                self._closing.wait(min(self.flush_s, 0.2))

    def _add(self, rows: dict[str, Rows], kind: RecordKind, payload: bytes, end: int) -> int:
        """Rows of one journal record (ending at byte `end`) for the tables that do not have it yet."""
        have = self._have
        if kind is RecordKind.EVENTS or kind is RecordKind.SEALED_EVENTS:
            if end <= have[EVENTS]:
                return 0
            events = rows[EVENTS]
            assert isinstance(events, EventRows)
            batch = self.reader.events(kind, payload)
            users = self.users
            added = 0
            for index, event in enumerate(batch):
                if users is not None and not users.analytics_allowed(event.user_id):
                    self.withheld += 1
                    continue
                events.add(event, 0, end, index)
                added += 1
            return added
        table = ITEMS if kind in (RecordKind.UPSERT_ITEMS, RecordKind.DELETE_ITEMS) else USERS
        if end <= have[table]:
            return 0
        changes = rows[table]
        ts = now_ms()
        if kind is RecordKind.UPSERT_ITEMS:
            assert isinstance(changes, ItemRows)
            items = catalog_pb2.UpsertItemsRequest.FromString(payload).items
            for index, item in enumerate(items):
                changes.upsert(item, ts, 0, end, index)
            return len(items)
        if kind is RecordKind.DELETE_ITEMS:
            assert isinstance(changes, ItemRows)
            item_ids = catalog_pb2.DeleteItemsRequest.FromString(payload).item_ids
            for index, item_id in enumerate(item_ids):
                changes.delete(item_id, ts, 0, end, index)
            return len(item_ids)
        assert isinstance(changes, UserRows)
        if kind is RecordKind.ERASE_USER:
            changes.delete(payload.decode(), ts, 0, end)
            return 1
        user = self.reader.user(kind, payload)
        if user is None:
            return 0
        changes.upsert(user, ts, 0, end)
        return 1

    def _flush(self, rows: dict[str, Rows], position: int) -> None:
        """Append each table's rows with `position` recorded; a table without rows only once it lags far."""
        for name in TABLES:
            behind = position - max(self._have[name], 0)
            if behind > 0 and (len(rows[name]) or behind > _MAX_LAG_BYTES):
                self._append(name, rows[name], position)

    def _append(self, name: str, rows: Rows, position: int) -> None:
        start = self.recorded[name]
        closing = self._closing
        # A LakeConflict is raised: another server writes this lake from its own journal, not a state to write
        # through. Closing, an append that still cannot be written after the longest wait is given up: the journal
        # keeps the records, and the next start appends them.
        append_retrying(
            self.lake,
            name,
            rows.table(),
            {JOURNAL_APP_ID: position},
            {JOURNAL_APP_ID: None if start < 0 else start},
            "embedded-server",
            lambda backoff: closing.is_set() and backoff >= MAX_BACKOFF_S,
        )
        self.recorded[name] = self._have[name] = position
        self.appended[name] += len(rows)


def _empty_rows() -> dict[str, Rows]:
    return {EVENTS: EventRows(), ITEMS: ItemRows(), USERS: UserRows()}
