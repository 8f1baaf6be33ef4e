"""Reader of DIGINETICA (CIKM Cup 2016): product views and purchases of a real shop, and item categories.

Files (``;``-separated, with a header row), all in one directory:

* ``train-item-views.csv`` (or the published sample, ``sample_train-item-views.csv``):
  ``sessionId;userId;itemId;timeframe;eventdate`` -> ``VIEW`` events;
* ``train-purchases.csv`` (optional): ``sessionId;userId;timeframe;eventdate;ordernumber;itemId`` ->
  ``PURCHASE``;
* ``product-categories.csv`` (optional): ``itemId;categoryId`` -> the item's category ``c<categoryId>``.

Users: a logged-in ``userId`` becomes user ``u<userId>``; an anonymous session (``NA``) becomes user
``s<sessionId>``, and the rows of a session that is logged in anywhere belong to that user. Time:
``timeframe`` is milliseconds since the session started and ``eventdate`` the day of the event, with no time
of day, so an event is stamped ``eventdate 00:00 UTC + timeframe mod 24 h``: events keep their day and, within
a day, their order in the session. The catalog is the items that occur in the events (the category file
annotates them; the other products of the shop, never seen, are not ranked).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from feature_worker.decay import DAY_MS
from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset, make_event, make_item, parse_day, parse_int, sort_events
from trainer.data.errors import DataFormatError

VIEWS_FILES = ("train-item-views.csv", "sample_train-item-views.csv")
PURCHASES_FILE = "train-purchases.csv"
CATEGORIES_FILE = "product-categories.csv"
VIEW_COLUMNS = ("sessionId", "userId", "itemId", "timeframe", "eventdate")
PURCHASE_COLUMNS = ("sessionId", "userId", "timeframe", "eventdate", "ordernumber", "itemId")
CATEGORY_COLUMNS = ("itemId", "categoryId")
_ANONYMOUS = "NA"


def load_diginetica(directory: Path) -> Dataset:
    """Read the views, purchases and categories in ``directory`` (see the module docstring)."""
    directory = Path(directory)
    views_path = next((directory / n for n in VIEWS_FILES if (directory / n).is_file()), None)
    if views_path is None:
        raise DataFormatError(directory, 0, f"no views file ({' or '.join(VIEWS_FILES)})")
    purchases_path = directory / PURCHASES_FILE
    views = list(_rows(views_path, VIEW_COLUMNS))
    purchases = list(_rows(purchases_path, PURCHASE_COLUMNS)) if purchases_path.is_file() else []
    # A session logged in on any row belongs to that user on every row.
    session_user: dict[str, str] = {}
    for _, row in views + purchases:
        if row["userId"] != _ANONYMOUS:
            session_user.setdefault(row["sessionId"], row["userId"])

    events: list[events_pb2.Event] = []
    seen: dict[str, tuple[Path, int]] = {}
    for path, rows, etype, prefix in (
        (views_path, views, events_pb2.VIEW, "v"),
        (purchases_path, purchases, events_pb2.PURCHASE, "p"),
    ):
        for line, row in rows:
            session = row["sessionId"]
            if not session:
                raise DataFormatError(path, line, "empty sessionId")
            user = session_user.get(session)
            user_id = f"u{user}" if user is not None else f"s{session}"
            ts = (
                parse_day(path, line, row["eventdate"])
                + parse_int(path, line, "timeframe", row["timeframe"]) % DAY_MS
            )
            item = row["itemId"]
            seen.setdefault(item, (path, line))
            events.append(
                make_event(path, line, f"{prefix}{line}", etype, user_id, item, ts, session_id=f"s{session}")
            )

    categories = (
        _categories(directory / CATEGORIES_FILE, set(seen)) if (directory / CATEGORIES_FILE).is_file() else {}
    )
    items: dict[str, catalog_pb2.Item] = {}
    for item, (path, line) in seen.items():
        category = categories.get(item, "")
        items[item] = make_item(path, line, item, category=f"c{category}" if category else "")
    notes = [
        f"views from {views_path.name}"
        + (f", purchases from {PURCHASES_FILE}" if purchases else ", no purchases"),
        "time of day unknown: events stamped day + timeframe mod 24 h",
    ]
    if not categories:
        notes.append(f"no {CATEGORIES_FILE}: items have no category")
    return Dataset("diginetica", items, sort_events(events), synthetic_time=False, notes=notes)


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=";")
        header = next(reader, None)
        # The published views sample spells its columns session_id;user_id;item_id: both spellings are read.
        if header is None or tuple(_camel(h) for h in header) != columns:
            got = ";".join(header) if header else "an empty file"
            raise DataFormatError(path, 1, f"header must be {';'.join(columns)}, got {got}")
        for row in reader:
            if len(row) != len(columns):
                raise DataFormatError(
                    path, reader.line_num, f"expected {len(columns)} fields, got {len(row)}"
                )
            yield reader.line_num, dict(zip(columns, row))


def _camel(name: str) -> str:
    head, *rest = name.strip().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _categories(path: Path, wanted: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line, row in _rows(path, CATEGORY_COLUMNS):
        item, category = row["itemId"], row["categoryId"]
        if not item or not category:
            raise DataFormatError(path, line, "empty itemId or categoryId")
        if item in wanted:
            out[item] = category
    return out
