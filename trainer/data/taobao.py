"""Reader of Taobao UserBehavior (Alibaba Tianchi): ``user_id,item_id,category_id,behavior_type,timestamp``.

No header; one row per event; ``timestamp`` in unix seconds. Behaviours map to Aisle's event types:
``pv`` -> ``VIEW``, ``fav`` (added to favourites) -> ``CLICK`` (more interest than a view, less than a cart),
``cart`` -> ``ADD_TO_CART``, ``buy`` -> ``PURCHASE``. An item's category is ``c<category_id>`` from its first
row. Timestamps outside the published window (the original has a few) are kept as they are: they are data.
"""

from __future__ import annotations

import csv
from pathlib import Path

from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset, make_event, make_item, parse_int, sort_events
from trainer.data.errors import DataFormatError

FILE = "UserBehavior.csv"
BEHAVIOURS: dict[str, events_pb2.EventType.ValueType] = {
    "pv": events_pb2.VIEW,
    "fav": events_pb2.CLICK,
    "cart": events_pb2.ADD_TO_CART,
    "buy": events_pb2.PURCHASE,
}


def load_taobao(directory: Path) -> Dataset:
    """Read ``UserBehavior.csv`` from ``directory`` (or ``directory`` itself when it is the file)."""
    path = Path(directory)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise DataFormatError(path, 0, "missing")
    events: list[events_pb2.Event] = []
    items: dict[str, catalog_pb2.Item] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            if len(row) != 5:
                raise DataFormatError(
                    path, line, f"expected 5 fields (user,item,category,behavior,timestamp), got {len(row)}"
                )
            user, item, category, behaviour, stamp = (field.strip() for field in row)
            etype = BEHAVIOURS.get(behaviour)
            if etype is None:
                raise DataFormatError(
                    path, line, f"unknown behavior {behaviour!r}, expected one of {', '.join(BEHAVIOURS)}"
                )
            if not category:
                raise DataFormatError(path, line, "empty category_id")
            seconds = parse_int(path, line, "timestamp", stamp)
            events.append(make_event(path, line, f"t{line}", etype, user, item, seconds * 1000))
            if item not in items:
                items[item] = make_item(path, line, item, category=f"c{category}")
    if not events:
        raise DataFormatError(path, 1, "empty file")
    return Dataset("taobao", items, sort_events(events), notes=["fav counted as CLICK"])
