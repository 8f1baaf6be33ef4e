"""Applying a batch of events to a store: load the users, fold each event, commit once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from feature_worker.catalog import Catalog
from feature_worker.fold import FoldConfig, ItemDeltas, fold
from feature_worker.stores.base import FeatureStore
from protos.aisle.v1 import events_pb2


@dataclass(slots=True)
class BatchResult:
    applied: int
    duplicates: int


async def apply_events(
    store: FeatureStore,
    catalog: Catalog,
    events: Sequence[events_pb2.Event],
    config: FoldConfig = FoldConfig(),
) -> BatchResult:
    """Fold validated events into the store, in the order given, with one load and one commit.

    Idempotent: re-applying events whose ids the users already hold changes nothing, so a batch
    redelivered after a crash (at-least-once) is applied effectively once.
    """
    users = await store.load_users({event.user_id for event in events})
    deltas = ItemDeltas()
    applied = 0
    for event in events:
        if fold(users[event.user_id], event, catalog, deltas, config):
            applied += 1
    if applied:
        await store.commit(users, deltas)
    return BatchResult(applied=applied, duplicates=len(events) - applied)
