"""Reader of a generated shop, the directory that ``python -m trainer generate`` writes.

The directory holds ``items.jsonl`` and ``users.jsonl`` (one protobuf-JSON ``Item`` or ``User`` per line, with the
proto field names), ``events.csv`` (one event per row, sorted by ``ts_ms``) and ``meta.json``. Every reader checks
each line and raises :class:`DataFormatError` naming the file and line on the first malformed one; nothing is
skipped. The readers stream: memory does not grow with the size of the file.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2
from trainer.data.errors import DataFormatError

ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.jsonl"
EVENTS_FILE = "events.csv"
META_FILE = "meta.json"

EVENT_COLUMNS = (
    "event_id",
    "type",
    "user_id",
    "session_id",
    "item_id",
    "ts_ms",
    "price",
    "quantity",
    "query",
    "recommendation_id",
)

# Event types that act on exactly one item: a row of one of these types without an item_id is malformed.
ITEM_EVENT_TYPES = frozenset(
    {
        events_pb2.VIEW,
        events_pb2.CLICK,
        events_pb2.ADD_TO_CART,
        events_pb2.REMOVE_FROM_CART,
        events_pb2.PURCHASE,
    }
)

_EVENT_TYPE_NAMES = frozenset(events_pb2.EventType.keys()) - {"EVENT_TYPE_UNSPECIFIED"}

_M = TypeVar("_M", bound=Message)


def read_meta(directory: Path) -> dict[str, int]:
    """Return ``meta.json``: users, items, seed, events, start_ms and end_ms (all integers).

    Every event of the shop has ``start_ms <= ts_ms < end_ms``.
    """
    path = Path(directory) / META_FILE
    with path.open(encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    if not isinstance(meta, dict):
        raise DataFormatError(path, 1, "expected a JSON object")
    for key in ("users", "items", "seed", "events", "start_ms", "end_ms"):
        # bool is an int subclass in Python, but `"users": true` is still malformed.
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise DataFormatError(path, 1, f"{key!r} must be an integer")
    return {str(k): int(v) for k, v in meta.items()}


def read_items(directory: Path) -> Iterator[catalog_pb2.Item]:
    """Yield the catalog's items in file order."""
    return _read_jsonl(Path(directory) / ITEMS_FILE, catalog_pb2.Item, "item_id")


def read_users(directory: Path) -> Iterator[users_pb2.User]:
    """Yield the shop's users in file order."""
    return _read_jsonl(Path(directory) / USERS_FILE, users_pb2.User, "user_id")


def read_events(directory: Path) -> Iterator[events_pb2.Event]:
    """Yield the events in file order, which is time order: ``ts_ms`` never decreases.

    Empty ``price``, ``quantity``, ``item_id``, ``query`` and ``recommendation_id`` cells become the proto
    defaults (0 or ""). A row whose time goes backwards is malformed, so a consumer may rely on the order.
    """
    path = Path(directory) / EVENTS_FILE
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(path, 1, "empty file, expected a header")
        if tuple(header) != EVENT_COLUMNS:
            raise DataFormatError(
                path, 1, f"header must be {','.join(EVENT_COLUMNS)}, got {','.join(header)}"
            )
        last_ts = -1
        for row in reader:
            event = _parse_event_row(path, reader.line_num, row)
            if event.ts_ms < last_ts:
                raise DataFormatError(path, reader.line_num, f"ts_ms {event.ts_ms} is before {last_ts}")
            last_ts = event.ts_ms
            yield event


def _parse_event_row(path: Path, line: int, row: list[str]) -> events_pb2.Event:
    if len(row) != len(EVENT_COLUMNS):
        raise DataFormatError(path, line, f"expected {len(EVENT_COLUMNS)} fields, got {len(row)}")
    event_id, type_name, user_id, session_id, item_id, ts, price, quantity, query, recommendation_id = row
    if not event_id:
        raise DataFormatError(path, line, "empty event_id")
    if not user_id:
        raise DataFormatError(path, line, "empty user_id")
    if type_name not in _EVENT_TYPE_NAMES:
        raise DataFormatError(path, line, f"unknown event type {type_name!r}")
    event_type = events_pb2.EventType.Value(type_name)
    if event_type in ITEM_EVENT_TYPES and not item_id:
        raise DataFormatError(path, line, f"{type_name} event without item_id")
    event = events_pb2.Event(
        event_id=event_id,
        type=event_type,
        user_id=user_id,
        session_id=session_id,
        item_id=item_id,
        ts_ms=_parse_int(path, line, "ts_ms", ts, required=True),
        price=_parse_price(path, line, price),
        quantity=_parse_int(path, line, "quantity", quantity, required=False),
        query=query,
        recommendation_id=recommendation_id,
    )
    if event.ts_ms < 0:
        raise DataFormatError(path, line, f"negative ts_ms {event.ts_ms}")
    return event


def _parse_int(path: Path, line: int, field: str, text: str, *, required: bool) -> int:
    if not text:
        if required:
            raise DataFormatError(path, line, f"empty {field}")
        return 0
    try:
        return int(text)
    except ValueError as exc:
        raise DataFormatError(path, line, f"{field} is not an integer: {text!r}") from exc


def _parse_price(path: Path, line: int, text: str) -> float:
    if not text:
        return 0.0
    try:
        price = float(text)
    except ValueError as exc:
        raise DataFormatError(path, line, f"price is not a number: {text!r}") from exc
    if not math.isfinite(price) or price < 0:
        raise DataFormatError(path, line, f"price must be a finite non-negative number, got {text!r}")
    return price


def _read_jsonl(path: Path, message_type: type[_M], id_field: str) -> Iterator[_M]:
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                raise DataFormatError(path, line_number, "empty line")
            try:
                data: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, line_number, f"invalid JSON: {exc.msg}") from exc
            if not isinstance(data, dict):
                raise DataFormatError(path, line_number, "expected a JSON object")
            message = message_type()
            try:
                json_format.ParseDict(data, message)
            except json_format.ParseError as exc:
                raise DataFormatError(path, line_number, str(exc)) from exc
            if not getattr(message, id_field):
                raise DataFormatError(path, line_number, f"missing {id_field}")
            yield message
