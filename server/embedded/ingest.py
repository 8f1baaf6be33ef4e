"""Embedded ingestion: journal first, then apply in process (the fold, the catalog, the users)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tqdm import tqdm

from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from server.embedded.journal import Journal, RecordKind
from server.ingest import Ingest

log = logging.getLogger(__name__)


class EmbeddedIngest(Ingest):
    """Writes each change to the journal, then applies it; `recover` replays the journal on start.

    Ordering: a change is journaled before it is applied and before the caller is answered, and the
    journal is replayed in write order, so a restarted server reaches exactly the state it had.
    """

    def __init__(self, journal: Journal, catalog: Catalog, users: UserDirectory, store: MemoryFeatureStore) -> None:
        self.journal = journal
        self.catalog = catalog
        self.users = users
        self.store = store

    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        self.journal.append(RecordKind.EVENTS, events_pb2.TrackRequest(events=events).SerializeToString())
        result = await apply_events(self.store, self.catalog, events)
        return result.duplicates

    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> None:
        self.journal.append(RecordKind.UPSERT_ITEMS, catalog_pb2.UpsertItemsRequest(items=items).SerializeToString())
        self.catalog.upsert_many(items)

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        self.journal.append(RecordKind.DELETE_ITEMS, catalog_pb2.DeleteItemsRequest(item_ids=item_ids).SerializeToString())
        return self.catalog.delete(item_ids)

    async def upsert_user(self, user: users_pb2.User) -> None:
        self.journal.append(RecordKind.UPSERT_USER, user.SerializeToString())
        self.users.upsert(user)

    async def recover(self) -> int:
        """Replay the journal into the (empty) in-process state; returns the records replayed."""
        count = 0
        size = self.journal.path.stat().st_size if self.journal.path.exists() else 0
        with tqdm(total=size, unit="B", unit_scale=True, desc="replaying journal", disable=size < 1 << 20) as bar:
            for kind, payload in self.journal.replay():
                if kind is RecordKind.EVENTS:
                    await apply_events(self.store, self.catalog, events_pb2.TrackRequest.FromString(payload).events)
                elif kind is RecordKind.UPSERT_ITEMS:
                    self.catalog.upsert_many(catalog_pb2.UpsertItemsRequest.FromString(payload).items)
                elif kind is RecordKind.DELETE_ITEMS:
                    self.catalog.delete(catalog_pb2.DeleteItemsRequest.FromString(payload).item_ids)
                elif kind is RecordKind.UPSERT_USER:
                    self.users.upsert(users_pb2.User.FromString(payload))
                count += 1
                bar.update(len(payload) + 9)
        if count:
            log.info("replayed %d journal records from %s", count, self.journal.path)
        return count

    async def close(self) -> None:
        self.journal.close()
