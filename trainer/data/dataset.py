"""A data set as Aisle sees it: catalog items and the events the serving path folds, in time order.

Every loader in ``trainer.data`` returns a :class:`Dataset`, whatever the source format, so the evaluation
protocols and the models never look at files. Events are the protobuf ``Event`` the fold consumes, each
checked by the same validation as the gRPC edge (:func:`make_event`), so anything a loader returns can be
folded.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from feature_worker.validation import validate_event, validate_item
from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.errors import DataFormatError

#: Validation refuses events stamped in the future; a data set is history, so no time is "the future".
_NO_FUTURE_LIMIT = 2**62
#: Event types that say something about a customer's interest in one item: the targets of the protocols.
INTERACTION_TYPES = frozenset(
    {events_pb2.VIEW, events_pb2.CLICK, events_pb2.ADD_TO_CART, events_pb2.PURCHASE}
)


@dataclass(slots=True)
class Dataset:
    """Items and events of one data set.

    ``events`` are sorted by ``ts_ms``; events with the same timestamp keep the order of the source files (a
    user's sequence order for S3-Rec). ``synthetic_time`` says the source had no timestamps and the loader
    stamped them (see its docstring): time-based protocols then measure the stamping, not the shop.
    """

    name: str
    items: dict[str, catalog_pb2.Item]
    events: list[events_pb2.Event]
    synthetic_time: bool = False
    #: What the loader did that a reader of the numbers should know (printed by ``trainer evaluate``).
    notes: list[str] = field(default_factory=list)
    #: Where exactly the data came from, recorded in every model bundle trained on it (for a Delta Lake batch
    #: store: the table versions read; for files: the directory and format).
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return len({event.user_id for event in self.events})

    def summary(self) -> str:
        interactions = sum(1 for event in self.events if event.type in INTERACTION_TYPES)
        return (
            f"{self.name}: {self.users:,} users, {len(self.items):,} items, {len(self.events):,} events "
            f"({interactions:,} item interactions)"
            + (", synthetic timestamps" if self.synthetic_time else "")
        )


def make_event(
    path: Path,
    line: int,
    event_id: str,
    etype: events_pb2.EventType.ValueType,
    user_id: str,
    item_id: str,
    ts_ms: int,
    session_id: str = "",
) -> events_pb2.Event:
    """An event checked as the gRPC edge checks it; a bad one raises ``DataFormatError`` (file, line)."""
    event = events_pb2.Event(
        event_id=event_id,
        type=etype,
        user_id=user_id,
        item_id=item_id,
        ts_ms=ts_ms,
        session_id=session_id,
    )
    problems = validate_event(event, _NO_FUTURE_LIMIT)
    if problems:
        raise DataFormatError(path, line, "; ".join(f"{name} {reason}" for name, reason in problems))
    return event


def make_item(
    path: Path,
    line: int,
    item_id: str,
    category: str = "",
    brand: str = "",
    attributes: dict[str, str] | None = None,
) -> catalog_pb2.Item:
    """A catalog item, in stock (the protocols rank every item), checked as ``CatalogService`` checks it."""
    item = catalog_pb2.Item(
        item_id=item_id, category=category, brand=brand, in_stock=True, attributes=attributes or {}
    )
    problems = validate_item(item)
    if problems:
        raise DataFormatError(path, line, "; ".join(f"{name} {reason}" for name, reason in problems))
    return item


def sort_events(events: Iterable[events_pb2.Event]) -> list[events_pb2.Event]:
    """Stable sort by ``ts_ms``: ties keep their order of arrival."""
    return sorted(events, key=_ts_of)


def _ts_of(event: events_pb2.Event) -> int:
    return event.ts_ms


def parse_day(path: Path, line: int, text: str) -> int:
    """``YYYY-MM-DD`` -> ms since the epoch at 00:00 UTC of that day."""
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d")) * 1000
    except ValueError as exc:
        raise DataFormatError(path, line, f"date is not YYYY-MM-DD: {text!r}") from exc


def parse_int(path: Path, line: int, name: str, text: str) -> int:
    """A non-negative integer field, or ``DataFormatError`` naming it."""
    try:
        value = int(text)
    except ValueError as exc:
        raise DataFormatError(path, line, f"{name} is not an integer: {text!r}") from exc
    if value < 0:
        raise DataFormatError(path, line, f"{name} must not be negative, got {value}")
    return value
