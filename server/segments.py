"""Segments of customers, and their recommendations in bulk (SegmentService.ExportRecommendations).

A segment is drawn from the customers with a record (`UserDirectory`: attributes and consent live there), in
the order of their ids. Attribute conditions are checked on the record; activity conditions (recent activity,
events, a category, purchases) on the customer's features, read from the store one customer at a time as
Recommend reads them. Each customer's list is exactly what Recommend would answer at that moment, through the
same `Engine.recommend`, so consent is respected the same way: without personalization consent the answer is the
non-personalized one (or, with `consented_only`, the customer is left out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from feature_worker.decay import DAY_MS
from feature_worker.errors import InvalidArgument
from feature_worker.state import UserState
from feature_worker.validation import MAX_TEXT_LEN, check_map, check_text
from protos.aisle.v1 import segments_pb2
from server.engine import Engine, now_ms
from server.recommender import MAX_K, Recommendation

#: Customers per streamed message: big enough to amortize a message, small enough to start output at once.
CHUNK = 256


@dataclass(frozen=True, slots=True)
class Exported:
    """One customer's row of an export."""

    user_id: str
    items: list[Recommendation]
    recommendation_id: str
    personalized: bool


@dataclass(frozen=True, slots=True)
class Chunk:
    """Up to CHUNK rows, and the progress of the scan when they were made."""

    rows: list[Exported]
    scanned: int
    total: int
    model_version: str


def validate(request: segments_pb2.ExportRecommendationsRequest) -> None:
    """INVALID_ARGUMENT (with every problem) for a request that cannot be exported."""
    problems: list[tuple[str, str]] = []
    if not 0 <= request.k <= MAX_K:
        problems.append(("k", f"must be from 1 to {MAX_K} (0 means the default), got {request.k}"))
    if not -1 <= request.max_per_category <= MAX_K:
        problems.append(("max_per_category", f"must be from -1 to {MAX_K}, got {request.max_per_category}"))
    check_text(request.category_prefix, "category_prefix", MAX_TEXT_LEN, problems)
    segment = request.segment
    check_map(segment.attributes, "segment.attributes", problems)
    check_text(segment.category, "segment.category", MAX_TEXT_LEN, problems)
    if segment.active_within_days < 0:
        problems.append(("segment.active_within_days", "must not be negative"))
    if segment.min_events < 0:
        problems.append(("segment.min_events", "must not be negative"))
    if problems:
        raise InvalidArgument(problems)


def _wants_activity(segment: segments_pb2.Segment) -> bool:
    """Whether the segment has activity conditions (which read the customer's features)."""
    return bool(segment.active_within_days or segment.min_events or segment.category or segment.buyers_only)


def _active(segment: segments_pb2.Segment, state: UserState | None, clock_ms: int) -> bool:
    """Whether the customer's features meet the segment's activity conditions (all of them; called only when
    it has some, `_wants_activity`)."""
    if state is None:
        return False
    if segment.active_within_days and state.last_seen_ms < clock_ms - segment.active_within_days * DAY_MS:
        return False
    if segment.min_events and state.events_applied < segment.min_events:
        return False
    if segment.buyers_only and state.purchase_count == 0:
        return False
    if segment.category:
        prefix = segment.category.rstrip("/")
        if not any(c == prefix or c.startswith(prefix + "/") for c in state.category_affinity):
            return False
    return True


async def export(engine: Engine, request: segments_pb2.ExportRecommendationsRequest) -> AsyncIterator[Chunk]:
    """The segment's customers and their recommendations, CHUNK at a time, in the order of their ids."""
    validate(request)
    segment = request.segment
    wanted = dict(segment.attributes)
    user_ids = engine.users.ids()
    # The clock activity is measured against: the newest event the shop has seen (as in GetProfile), or now.
    if engine.lists_refresh_s <= 0:
        await engine.refresh_lists()
    clock_ms = engine.recommender.lists.clock_ms or now_ms()
    rows: list[Exported] = []
    model_version = ""
    needs_features = _wants_activity(segment)
    for scanned, user_id in enumerate(user_ids, start=1):
        record = engine.users.get(user_id)
        if record is None or any(record.attributes.get(k) != v for k, v in wanted.items()):
            continue
        allowed = engine.users.personalization_allowed(user_id)
        if request.consented_only and not allowed:
            continue
        if needs_features and not _active(
            segment, (await engine.store.read_request(user_id, ())).user, clock_ms
        ):
            continue
        answer = await engine.recommend(
            user_id, request.k, "", (), request.category_prefix, request.max_per_category, request.explain
        )
        model_version = answer.model_version
        rows.append(Exported(user_id, answer.items, answer.recommendation_id, allowed))
        if len(rows) >= CHUNK:
            yield Chunk(rows, scanned, len(user_ids), model_version)
            rows = []
    # Always a last message, possibly without customers: scanned == total says the export is complete.
    yield Chunk(rows, len(user_ids), len(user_ids), model_version)
