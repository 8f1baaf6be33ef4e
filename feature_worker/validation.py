"""Input checks for events, items and users, shared by the gRPC edge and the Kafka worker.

Each check returns `(field, reason)` pairs instead of raising, so a batch can keep its good records
and report every bad one (gRPC `Rejection`s, dead-letter reasons).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2

MAX_ID_LEN = 128
MAX_TEXT_LEN = 1024
MAX_DESCRIPTION_LEN = 16_384
MAX_MAP_ENTRIES = 64
MAX_ITEM_IDS = 200
MAX_QUANTITY = 100_000
MAX_PRICE = 1e9
#: Events stamped further ahead than this (client clock skew) are refused: they would move the stream
#: clock into the future for everybody.
MAX_FUTURE_MS = 3_600_000

Problem = tuple[str, str]

_EVENT_TYPES = frozenset(events_pb2.EventType.values())
_ITEM_TYPES = frozenset(
    {
        events_pb2.VIEW,
        events_pb2.CLICK,
        events_pb2.ADD_TO_CART,
        events_pb2.REMOVE_FROM_CART,
        events_pb2.PURCHASE,
    }
)
#: Every type that an event with an `item_id` may have: all but unspecified.
_ITEM_EVENT_TYPES = _EVENT_TYPES - {events_pb2.EVENT_TYPE_UNSPECIFIED}


def check_id(value: str, field: str, problems: list[Problem], required: bool = True) -> None:
    """An identifier: non-empty (when required), at most MAX_ID_LEN characters, no control characters."""
    if not value:
        if required:
            problems.append((field, "is required"))
        return
    if len(value) > MAX_ID_LEN:
        problems.append((field, f"is longer than {MAX_ID_LEN} characters"))
    elif not value.isprintable():
        problems.append((field, "contains control or non-printable characters"))


def check_text(value: str, field: str, limit: int, problems: list[Problem]) -> None:
    if len(value) > limit:
        problems.append((field, f"is longer than {limit} characters"))


def check_map(entries: Mapping[str, str], field: str, problems: list[Problem]) -> None:
    if len(entries) > MAX_MAP_ENTRIES:
        problems.append((field, f"has more than {MAX_MAP_ENTRIES} entries"))
        return
    for key, value in entries.items():
        if not key or len(key) > MAX_ID_LEN:
            problems.append((f"{field}[{key[:32]!r}]", f"keys must be 1 to {MAX_ID_LEN} characters"))
        elif len(value) > MAX_TEXT_LEN:
            problems.append((f"{field}[{key[:32]!r}]", f"is longer than {MAX_TEXT_LEN} characters"))


def validate_event(event: events_pb2.Event, now_ms: int) -> list[Problem]:
    """Everything wrong with one event; empty when it can be folded.

    `ts_ms == 0` is allowed here (it means "now"); the caller stamps it before logging or folding.
    """
    if _plainly_valid(event, now_ms):
        return []
    return _event_problems(event, now_ms)


def _event_problems(event: events_pb2.Event, now_ms: int) -> list[Problem]:
    problems: list[Problem] = []
    check_id(event.event_id, "event_id", problems)
    check_id(event.user_id, "user_id", problems)
    if event.session_id:
        check_id(event.session_id, "session_id", problems, required=False)
    if event.recommendation_id:
        check_id(event.recommendation_id, "recommendation_id", problems, required=False)
    etype = event.type
    if etype == events_pb2.EVENT_TYPE_UNSPECIFIED or etype not in _EVENT_TYPES:
        problems.append(
            (
                "type",
                "must be one of VIEW, CLICK, SEARCH, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, IMPRESSION",
            )
        )
    item_id = event.item_id
    if item_id:
        check_id(item_id, "item_id", problems, required=False)
    item_ids = event.item_ids
    if len(item_ids) > MAX_ITEM_IDS:
        problems.append(("item_ids", f"has more than {MAX_ITEM_IDS} items"))
    else:
        for i, item in enumerate(item_ids):
            check_id(item, f"item_ids[{i}]", problems)
    if etype in _ITEM_TYPES and not item_id and not item_ids:
        problems.append(("item_id", f"is required for {events_pb2.EventType.Name(etype)} events"))
    if etype == events_pb2.IMPRESSION and not item_ids and not item_id:
        problems.append(("item_ids", "an IMPRESSION needs the items shown"))
    ts = event.ts_ms
    if ts < 0:
        problems.append(("ts_ms", "must not be negative"))
    elif ts > now_ms + MAX_FUTURE_MS:
        problems.append(("ts_ms", "is more than one hour in the future"))
    price = event.price
    if price and (not math.isfinite(price) or price < 0 or price > MAX_PRICE):
        problems.append(("price", f"must be a finite number from 0 to {MAX_PRICE:g}"))
    quantity = event.quantity
    if quantity < 0 or quantity > MAX_QUANTITY:
        problems.append(("quantity", f"must be from 0 to {MAX_QUANTITY}"))
    if event.query:
        check_text(event.query, "query", MAX_TEXT_LEN, problems)
    if event.context:
        check_map(event.context, "context", problems)
    return problems


def _plainly_valid(event: events_pb2.Event, now_ms: int) -> bool:
    """True for the usual event (one item or none, no context), when every check of `validate_event` passes.

    The hot path of the Kafka worker and of Track: the same rules as `validate_event`, with fewer
    attribute reads and calls. False means "look closer" (`validate_event` then names the problems, or
    finds none, for events with several items or a context).
    """
    event_id = event.event_id
    user_id = event.user_id
    session_id = event.session_id
    item_id = event.item_id
    recommendation_id = event.recommendation_id
    etype = event.type
    price = event.price
    quantity = event.quantity
    ts = event.ts_ms
    return (
        0 < len(event_id) <= MAX_ID_LEN
        and 0 < len(user_id) <= MAX_ID_LEN
        and len(session_id) <= MAX_ID_LEN
        and len(item_id) <= MAX_ID_LEN
        and len(recommendation_id) <= MAX_ID_LEN
        # Printable parts make a printable whole, and the reverse (an empty part is printable).
        and (event_id + user_id + session_id + item_id + recommendation_id).isprintable()
        and (etype in _ITEM_EVENT_TYPES if item_id else etype == events_pb2.SEARCH)
        and 0 <= ts <= now_ms + MAX_FUTURE_MS
        and 0.0 <= price <= MAX_PRICE  # False for NaN
        and 0 <= quantity <= MAX_QUANTITY
        and len(event.query) <= MAX_TEXT_LEN
        and not event.item_ids
        and not event.context
    )


def validate_item(item: catalog_pb2.Item) -> list[Problem]:
    """Everything wrong with one catalog item."""
    problems: list[Problem] = []
    check_id(item.item_id, "item_id", problems)
    check_text(item.title, "title", MAX_TEXT_LEN, problems)
    check_text(item.description, "description", MAX_DESCRIPTION_LEN, problems)
    check_text(item.category, "category", MAX_TEXT_LEN, problems)
    check_id(item.brand, "brand", problems, required=False)
    if not math.isfinite(item.price) or item.price < 0 or item.price > MAX_PRICE:
        problems.append(("price", f"must be a finite number from 0 to {MAX_PRICE:g}"))
    check_map(item.attributes, "attributes", problems)
    return problems


def validate_user(user: users_pb2.User) -> list[Problem]:
    """Everything wrong with one user record."""
    problems: list[Problem] = []
    check_id(user.user_id, "user_id", problems)
    check_map(user.attributes, "attributes", problems)
    return problems
