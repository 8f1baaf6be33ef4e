"""Applying a batch of events to a store: load the users, fold each event, commit once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from feature_worker.catalog import Catalog
from feature_worker.fold import FoldConfig, ItemDeltas, fold
from feature_worker.state import UserState
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
    changed, deltas, applied = fold_batch(users, catalog, events, config, store.delta_group)
    if applied:
        await store.commit(changed, deltas)
    return BatchResult(applied=applied, duplicates=len(events) - applied)


def fold_batch(
    users: Mapping[str, UserState],
    catalog: Catalog,
    events: Sequence[events_pb2.Event],
    config: FoldConfig = FoldConfig(),
    group: Callable[[str], str] | None = None,
) -> tuple[dict[str, UserState], ItemDeltas, int]:
    """Fold `events` into `users` (in place): the states that changed, the item deltas, how many applied.

    Every event's user must be in `users`. Only events not yet applied make item deltas, which is what
    makes committing the result idempotent. With `group` (the store's `delta_group`), the deltas are split
    by the group of each event's user (`ItemDeltas.groups`), for stores that commit per group.
    """
    deltas = ItemDeltas()
    changed: dict[str, UserState] = {}
    applied = 0
    if group is not None:
        groups, group_of = deltas.groups, deltas.group_of
        for event in events:
            user_id = event.user_id
            state = users[user_id]
            name = group_of.get(user_id)
            if name is None:
                name = group_of[user_id] = group(user_id)
            part = groups.get(name)
            if part is None:
                part = groups[name] = ItemDeltas()
            if fold(state, event, catalog, part, config):
                applied += 1
                changed[user_id] = state
        deltas.clock_ms = max((part.clock_ms for part in groups.values()), default=0)
        return changed, deltas, applied
    for event in events:
        user_id = event.user_id
        state = users[user_id]
        if fold(state, event, catalog, deltas, config):
            applied += 1
            changed[user_id] = state
    return changed, deltas, applied
