"""Writes: events (Track), catalog changes and customer records, validated, then handed to the ingest."""

from __future__ import annotations

from collections.abc import Sequence

from feature_worker.errors import InvalidArgument
from feature_worker.validation import check_id, validate_event, validate_item, validate_user
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from server.engine.answers import TrackResult, now_ms
from server.engine.checks import MAX_BATCH
from server.engine.core import EngineCore


class Writes(EngineCore):
    """Track, UpsertItems, DeleteItems and UpsertUser."""

    async def track(self, events: Sequence[events_pb2.Event]) -> TrackResult:
        """Validate each event; record the good ones and report the bad ones by index.

        Events stamped 0 get the receive time. A batch size outside 1..MAX_BATCH is refused whole.
        """
        if not 1 <= len(events) <= MAX_BATCH:
            raise InvalidArgument([("events", f"must hold 1 to {MAX_BATCH} events, got {len(events)}")])
        now = now_ms()
        good: list[events_pb2.Event] = []
        rejected: list[tuple[int, str, str]] = []
        for index, event in enumerate(events):
            problems = validate_event(event, now)
            if problems:
                rejected.extend((index, field, reason) for field, reason in problems)
                continue
            if event.ts_ms == 0:
                stamped = events_pb2.Event()
                stamped.CopyFrom(event)
                stamped.ts_ms = now
                event = stamped
            good.append(event)
        duplicates = await self.ingest.events(good) if good else 0
        if self.experiments is not None and good:
            self.experiments.outcomes.count(good)
        if self.lists_refresh_s <= 0:
            await self.refresh_lists()
        return TrackResult(accepted=len(good), duplicates=duplicates, rejected=rejected)

    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> int:
        """All or nothing: a catalog update with a bad item is refused whole, naming each problem."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidArgument([("items", f"must hold 1 to {MAX_BATCH} items, got {len(items)}")])
        violations = [
            (f"items[{i}].{field}", reason)
            for i, item in enumerate(items)
            for field, reason in validate_item(item)
        ]
        if violations:
            raise InvalidArgument(violations)
        await self.ingest.upsert_items(items)
        return len(items)

    async def delete_items(self, item_ids: Sequence[str]) -> int:
        if not 1 <= len(item_ids) <= MAX_BATCH:
            raise InvalidArgument([("item_ids", f"must hold 1 to {MAX_BATCH} ids, got {len(item_ids)}")])
        violations: list[tuple[str, str]] = []
        for i, item_id in enumerate(item_ids):
            check_id(item_id, f"item_ids[{i}]", violations)
        if violations:
            raise InvalidArgument(violations)
        return await self.ingest.delete_items(item_ids)

    async def upsert_user(self, user: users_pb2.User) -> None:
        violations = [(f"user.{field}", reason) for field, reason in validate_user(user)]
        if violations:
            raise InvalidArgument(violations)
        await self.ingest.upsert_user(user)
