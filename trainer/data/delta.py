"""Reading the batch store (the Delta Lake tables that `python -m feature_worker sink` and the embedded server
write, `feature_worker.lake`) into a :class:`Dataset`, at one version of each table.

The versions are pinned before anything is read, so writers that go on appending meanwhile change nothing
in the result, and they are recorded in ``Dataset.provenance`` (``events_version``, ``items_version``,
``users_version``): the same versions read again give the same data set, byte for byte (until a vacuum
removes files older than its retention, `feature_worker.lake.maintenance`).

- Items: the latest state of each item in the ``items`` change log (in the order the changes were applied),
  without the deleted ones, all marked in stock (the protocols rank every item, as for ``generated``).
- Events: every row of ``events`` decoded from its ``raw`` protobuf, checked as the gRPC edge checks it
  (a bad one raises ``DataFormatError`` naming the table and the row's source), a repeated ``(user_id,
  event_id)`` kept once (the first accepted: a producer's retry, which the fold ignores too), sorted by
  ``ts_ms``, ties in the order they were accepted.
- Users: read at their version (recorded for provenance); a ``Dataset`` carries no users.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from feature_worker.lake.schema import DELETE, EVENTS, ITEMS, TABLES, USERS
from feature_worker.lake.writer import table_uri
from feature_worker.validation import validate_event
from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset
from trainer.data.errors import DataFormatError

#: Validation refuses events stamped in the future; a data set is history (as ``dataset.make_event``).
_NO_FUTURE_LIMIT = 2**62
_ORDER = [("source_partition", "ascending"), ("source_offset", "ascending"), ("source_index", "ascending")]


def load_delta(directory: Path | str, versions: Mapping[str, int] | None = None) -> Dataset:
    """The batch store under ``directory`` (``AISLE_LAKE_DIR``) at the tables' current versions.

    ``versions`` (table name -> version, e.g. from an earlier ``provenance``) reads those versions instead.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    root = str(directory)
    tables: dict[str, DeltaTable] = {}
    for name in TABLES:  # pin every version first: nothing below sees a later commit
        path = Path(table_uri(root, name))
        try:
            tables[name] = DeltaTable(str(path), version=(versions or {}).get(name))
        except TableNotFoundError as exc:
            raise DataFormatError(path, 0, "not a Delta table (is this AISLE_LAKE_DIR?)") from exc
        except DeltaError as exc:
            raise DataFormatError(
                path, 0, f"cannot read version {(versions or {}).get(name)}: {exc}"
            ) from exc
    versions = {name: int(table.version()) for name, table in tables.items()}
    items = _items(tables[ITEMS].to_pyarrow_table(columns=["op", "item_id", "raw", *_COLUMNS]))
    events, duplicates = _events(
        Path(table_uri(root, EVENTS)),
        tables[EVENTS].to_pyarrow_table(columns=["raw", "user_id", "event_id", "ts_ms", *_COLUMNS]),
    )
    tables[USERS].to_pyarrow_table(columns=["user_id"])  # read at the pinned version, like the others
    notes = ["every item marked in stock"]
    if duplicates:
        notes.append(f"{duplicates:,} repeated event ids dropped")
    provenance = {
        "format": "delta",
        "path": root,
        **{f"{name}_version": str(versions[name]) for name in TABLES},
    }
    return Dataset("delta", items, events, notes=notes, provenance=provenance)


_COLUMNS = ["source_partition", "source_offset", "source_index"]


def _items(changes: pa.Table) -> dict[str, catalog_pb2.Item]:
    items: dict[str, catalog_pb2.Item] = {}
    changes = changes.sort_by(_ORDER)
    for op, item_id, raw in zip(
        changes["op"].to_pylist(), changes["item_id"].to_pylist(), changes["raw"].to_pylist(), strict=True
    ):
        if op == DELETE:
            items.pop(item_id, None)
        else:
            item = catalog_pb2.Item.FromString(raw)
            item.in_stock = True
            items[item_id] = item
    return items


def _events(path: Path, rows: pa.Table) -> tuple[list[events_pb2.Event], int]:
    """Decoded, checked, deduplicated events in time order; and how many repeats were dropped."""
    rows = rows.sort_by([("ts_ms", "ascending"), *_ORDER])
    events: list[events_pb2.Event] = []
    first_seen = _first_seen(rows)
    duplicates = 0
    parse = events_pb2.Event.FromString
    for i, (raw, keep) in enumerate(zip(rows["raw"].to_pylist(), first_seen, strict=True)):
        if not keep:
            duplicates += 1
            continue
        event = parse(raw)
        problems = validate_event(event, _NO_FUTURE_LIMIT)
        if problems:
            where = f"row from partition {rows['source_partition'][i]} offset {rows['source_offset'][i]}"
            raise DataFormatError(path, 0, f"{where}: " + "; ".join(f"{n} {r}" for n, r in problems))
        events.append(event)
    return events, duplicates


def _first_seen(rows: pa.Table) -> list[bool]:
    """Per row (time order), whether it is the first accepted of its ``(user_id, event_id)``.

    "First" is the order of acceptance (the source order), not of ``ts_ms``: a retry carries the same time.
    """
    n = rows.num_rows
    if n == 0:
        return []
    order = pc.sort_indices(rows, sort_keys=_ORDER)
    keep = [True] * n
    seen: set[tuple[str, str]] = set()
    users = rows["user_id"].to_pylist()
    ids = rows["event_id"].to_pylist()
    for index in order.to_pylist():
        key = (users[index], ids[index])
        if key in seen:
            keep[index] = False
        else:
            seen.add(key)
    return keep
