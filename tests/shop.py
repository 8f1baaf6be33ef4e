"""A tiny synthetic shop with known answers, and builders for events and items."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from typing import TypedDict, Unpack

from protos.aisle.v1 import catalog_pb2, events_pb2

_ids = itertools.count()
BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def unique(prefix: str) -> str:
    """An id no other test uses, so tests can share one server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def item(
    item_id: str,
    category: str = "beauty/skin/moisturizer",
    brand: str = "acme",
    price: float = 10.0,
    in_stock: bool = True,
) -> catalog_pb2.Item:
    return catalog_pb2.Item(
        item_id=item_id,
        title=f"Item {item_id}",
        category=category,
        brand=brand,
        price=price,
        in_stock=in_stock,
    )


class EventFields(TypedDict, total=False):
    """The `Event` fields that `event` and `view` do not set themselves."""

    session_id: str
    item_ids: Iterable[str]
    price: float
    quantity: int
    query: str
    context: Mapping[str, str]
    recommendation_id: str


def event(
    user: str,
    etype: events_pb2.EventType.ValueType,
    item_id: str = "",
    ts_ms: int = BASE_TS,
    event_id: str | None = None,
    **fields: Unpack[EventFields],
) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=event_id or f"e{next(_ids)}-{uuid.uuid4().hex[:8]}",
        type=etype,
        user_id=user,
        item_id=item_id,
        ts_ms=ts_ms,
        **fields,
    )


def view(
    user: str,
    item_id: str,
    ts_ms: int = BASE_TS,
    *,
    event_id: str | None = None,
    **fields: Unpack[EventFields],
) -> events_pb2.Event:
    return event(user, events_pb2.VIEW, item_id, ts_ms, event_id, **fields)


class Shop:
    """Items namespaced by a unique prefix: `shop.item_ids("a", 5)` -> ["<p>-a0", …]."""

    def __init__(self) -> None:
        self.prefix = unique("shop")

    def id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def category(self, name: str) -> str:
        return f"{self.prefix}/{name}"
