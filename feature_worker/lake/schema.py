"""The batch store's tables, their Arrow schemas, and protobuf messages -> columnar rows.

Three tables under `Settings.lake_dir`, each partitioned by `date` (the UTC day, `YYYY-MM-DD`, of `ts_ms`):

- `events`: one row per accepted event, its fields spelled out (`type` by name) plus `raw`, the protobuf
  encoding of the event as stored, so that a field added to the proto later is not lost;
- `items`: the catalog's change log, one row per upsert (`op` "upsert", the item's fields, `raw`) or delete
  (`op` "delete", only `item_id`); `ts_ms` is when the change was accepted;
- `users`: the same for customer records; `consent_*` are null when the record carries no consent.

Every row says where it was read: `source_partition` and `source_offset` (the Kafka partition and offset
of the record, or 0 and the end offset of the journal record on the embedded server) and `source_index`
(the position inside that record: a journal record holds a whole request). Ordering by
`(source_partition, source_offset, source_index)` gives the order in which one writer accepted the rows;
the `items` and `users` topics have one partition, so that is the order the changes were applied in.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2

EVENTS = "events"
ITEMS = "items"
USERS = "users"
TABLES = (EVENTS, ITEMS, USERS)
PARTITION_BY = ["date"]

_STRINGS = pa.map_(pa.string(), pa.string())
_SOURCE = [
    pa.field("source_partition", pa.int32(), nullable=False),
    pa.field("source_offset", pa.int64(), nullable=False),
    pa.field("source_index", pa.int32(), nullable=False),
]

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("quantity", pa.int32()),
        pa.field("query", pa.string()),
        pa.field("context", _STRINGS),
        pa.field("recommendation_id", pa.string()),
        pa.field("raw", pa.binary(), nullable=False),
        *_SOURCE,
        pa.field("date", pa.string(), nullable=False),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("op", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("in_stock", pa.bool_()),
        pa.field("attributes", _STRINGS),
        pa.field("raw", pa.binary()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        *_SOURCE,
        pa.field("date", pa.string(), nullable=False),
    ]
)

USERS_SCHEMA = pa.schema(
    [
        pa.field("op", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("attributes", _STRINGS),
        pa.field("consent_personalization", pa.bool_()),
        pa.field("consent_analytics", pa.bool_()),
        pa.field("raw", pa.binary()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        *_SOURCE,
        pa.field("date", pa.string(), nullable=False),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {EVENTS: EVENTS_SCHEMA, ITEMS: ITEMS_SCHEMA, USERS: USERS_SCHEMA}

UPSERT = "upsert"
DELETE = "delete"

_TYPE_NAMES = {value.number: value.name for value in events_pb2.EventType.DESCRIPTOR.values}
_DAY_MS = 86_400_000
_days: dict[int, str] = {}


def utc_date(ts_ms: int) -> str:
    """`YYYY-MM-DD` of the UTC day holding `ts_ms` (negative times count as the epoch's day)."""
    day = max(ts_ms, 0) // _DAY_MS
    text = _days.get(day)
    if text is None:
        text = _days[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
    return text


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Rows:
    """Rows of one table being filled one by one (as tuples in schema order), turned into Arrow at once.

    Memory: the rows stay Python tuples until `table`, about 1 KB per event; callers bound their batches
    (`Settings.sink_batch_max`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.schema: pa.Schema = SCHEMAS[name]
        self.rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(self.schema)
        return pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)], schema=self.schema
        )


class EventRows(Rows):
    def __init__(self) -> None:
        super().__init__(EVENTS)

    def add(self, event: events_pb2.Event, partition: int, offset: int, index: int = 0) -> None:
        """One event as stored (its `ts_ms` already set from the record when it came without one)."""
        context = event.context
        item_ids = event.item_ids
        ts = event.ts_ms
        self.rows.append(
            (
                event.event_id,
                _TYPE_NAMES.get(event.type) or str(event.type),
                event.user_id,
                event.session_id,
                event.item_id,
                list(item_ids) if item_ids else [],
                ts,
                event.price,
                event.quantity,
                event.query,
                list(context.items()) if context else [],
                event.recommendation_id,
                event.SerializeToString(deterministic=True),
                partition,
                offset,
                index,
                utc_date(ts),
            )
        )


class ItemRows(Rows):
    def __init__(self) -> None:
        super().__init__(ITEMS)

    def upsert(self, item: catalog_pb2.Item, ts_ms: int, partition: int, offset: int, index: int = 0) -> None:
        self.rows.append(
            (
                UPSERT,
                item.item_id,
                item.title,
                item.description,
                item.category,
                item.brand,
                item.price,
                item.in_stock,
                list(item.attributes.items()),
                item.SerializeToString(deterministic=True),
                ts_ms,
                partition,
                offset,
                index,
                utc_date(ts_ms),
            )
        )

    def delete(self, item_id: str, ts_ms: int, partition: int, offset: int, index: int = 0) -> None:
        self.rows.append((DELETE, item_id, *(None,) * 8, ts_ms, partition, offset, index, utc_date(ts_ms)))


class UserRows(Rows):
    def __init__(self) -> None:
        super().__init__(USERS)

    def upsert(self, user: users_pb2.User, ts_ms: int, partition: int, offset: int, index: int = 0) -> None:
        consent = user.HasField("consent")
        self.rows.append(
            (
                UPSERT,
                user.user_id,
                list(user.attributes.items()),
                user.consent.personalization if consent else None,
                user.consent.analytics if consent else None,
                user.SerializeToString(deterministic=True),
                ts_ms,
                partition,
                offset,
                index,
                utc_date(ts_ms),
            )
        )

    def delete(self, user_id: str, ts_ms: int, partition: int, offset: int, index: int = 0) -> None:
        self.rows.append((DELETE, user_id, *(None,) * 4, ts_ms, partition, offset, index, utc_date(ts_ms)))


def rows_for(name: str) -> Rows:
    """An empty row buffer for table `name`."""
    return {EVENTS: EventRows, ITEMS: ItemRows, USERS: UserRows}[name]()
