"""Readers of the S3-Rec sequence format (Amazon Beauty, Sports, Toys, Yelp as published by S3-Rec and
ICLRec).

``<Name>.txt`` holds one user per line, ``user item1 item2 ...`` in time order;
``<Name>_item2attributes.json`` maps each item id to a list of attribute ids (brand and categories, without
names). The timestamped variant (TiCoSeRec: ``<Name>_item_*.txt`` plus ``<Name>_time_*.txt``, aligned position
by position, unix seconds) has the same users but renumbered items; ``item_map_s3rec_to_time.tsv`` maps S3-Rec
item ids to its ids so the attributes carry over.

Each interaction becomes a ``PURCHASE`` event (a review is written by a buyer). Attributes become Aisle's
category and brand (see :func:`read_attributes`), so the serving path's content source has something to use.
"""

from __future__ import annotations

import json
from pathlib import Path

from feature_worker.decay import EPOCH_MS
from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset, make_event, make_item, parse_int, sort_events
from trainer.data.errors import DataFormatError

#: Where the synthetic clock of the untimed format starts (2020-01-01T00:00Z).
SYNTHETIC_START_MS = EPOCH_MS
#: Time between two consecutive interactions of a user when the source has no timestamps; see `load_s3rec`.
DEFAULT_SPACING_MS = 60_000
MAP_FILE = "item_map_s3rec_to_time.tsv"
ATTRIBUTES_SUFFIX = "_item2attributes.json"


def load_s3rec(directory: Path, spacing_ms: int = DEFAULT_SPACING_MS) -> Dataset:
    """Read ``<Name>.txt`` and, when present, ``<Name>_item2attributes.json`` from ``directory``.

    The format has no time, only order. Every user's sequence is stamped from the same start,
    ``SYNTHETIC_START_MS + position * spacing_ms``, so users run in parallel and a user's interactions are
    ``spacing_ms`` apart. The spacing decides which interactions the fold pairs for co-visitation (those
    within ``FoldConfig.covis_window_ms``, at most ``covis_max_pairs`` nearest): with the default minute and
    the default hour-long window, each interaction pairs with its ten nearest predecessors, the same
    neighbourhood a browsing session gives (a spacing of 12 to 30 minutes, pairing fewer, measured the same on
    Beauty's validation split). Decay and trending see a stream a few hours long.
    """
    directory = Path(directory)
    attributes_path = _single(directory, "*" + ATTRIBUTES_SUFFIX, required=False)
    if attributes_path is not None:
        sequences_path = directory / (attributes_path.name[: -len(ATTRIBUTES_SUFFIX)] + ".txt")
        if not sequences_path.is_file():
            raise DataFormatError(sequences_path, 0, f"missing: the sequences of {attributes_path.name}")
    else:
        sequences_path = _required(directory, "*.txt", ignore={"SOURCE.txt", "README.txt"})
    if spacing_ms <= 0:
        raise ValueError(f"spacing_ms must be positive, got {spacing_ms}")
    sequences = _read_sequences(sequences_path)
    events: list[events_pb2.Event] = []
    item_ids: dict[str, int] = {}
    for user, (line, items) in sequences.items():
        for position, item in enumerate(items):
            item_ids.setdefault(item, line)
            ts = SYNTHETIC_START_MS + position * spacing_ms
            events.append(
                make_event(sequences_path, line, f"{user}:{position}", events_pb2.PURCHASE, user, item, ts)
            )
    attributes = read_attributes(attributes_path) if attributes_path else {}
    catalog = _items(sequences_path, item_ids, attributes)
    notes = [f"no timestamps in {sequences_path.name}: interactions stamped {spacing_ms / 1000:g} s apart"]
    if not attributes:
        notes.append("no attributes file: items have no category or brand")
    return Dataset(sequences_path.stem, catalog, sort_events(events), synthetic_time=True, notes=notes)


def load_s3rec_time(directory: Path, attributes_path: Path | None = None) -> Dataset:
    """Read ``<Name>_item_*.txt`` and its aligned ``<Name>_time_*.txt`` from ``directory``.

    Times are unix seconds (day resolution for Amazon); interactions on the same day keep their file order.
    Attributes come from ``attributes_path``, else from a ``*_item2attributes.json`` in ``directory``, else,
    when ``directory`` holds ``item_map_s3rec_to_time.tsv``, from ``<Name>_item2attributes.json`` in a
    sibling directory (the untimed S3-Rec copy of the same data set); S3-Rec item ids are then mapped through
    the map file, and items it does not map get no attributes.
    """
    directory = Path(directory)
    items_path = _required(directory, "*_item_*.txt")
    times_path = directory / items_path.name.replace("_item_", "_time_", 1)
    if not times_path.is_file():
        raise DataFormatError(times_path, 0, f"missing: the timestamps aligned with {items_path.name}")
    sequences = _read_sequences(items_path)
    times = _read_sequences(times_path)
    events: list[events_pb2.Event] = []
    item_ids: dict[str, int] = {}
    for user, (line, items) in sequences.items():
        if user not in times:
            raise DataFormatError(times_path, 0, f"user {user} of {items_path.name}:{line} has no timestamps")
        time_line, stamps = times[user]
        if len(stamps) != len(items):
            raise DataFormatError(
                times_path, time_line, f"user {user} has {len(stamps)} timestamps for {len(items)} items"
            )
        last = -1
        for position, (item, stamp) in enumerate(zip(items, stamps)):
            seconds = parse_int(times_path, time_line, "timestamp", stamp)
            if seconds < last:
                raise DataFormatError(
                    times_path, time_line, f"timestamp {seconds} of user {user} is before {last}"
                )
            last = seconds
            item_ids.setdefault(item, line)
            events.append(
                make_event(
                    items_path, line, f"{user}:{position}", events_pb2.PURCHASE, user, item, seconds * 1000
                )
            )
    extra = set(times) - set(sequences)
    if extra:
        user = min(extra)
        raise DataFormatError(times_path, times[user][0], f"user {user} has timestamps but no items")
    notes: list[str] = []
    mapping: dict[str, str] | None = None
    name = items_path.name.split("_item_", 1)[0]
    if attributes_path is None:
        attributes_path = _single(directory, "*" + ATTRIBUTES_SUFFIX, required=False)
    if attributes_path is None and (directory / MAP_FILE).is_file():
        candidates = sorted(directory.parent.glob(f"*/{name}{ATTRIBUTES_SUFFIX}"))
        attributes_path = candidates[0] if candidates else None
    attributes: dict[str, list[int]] = {}
    if attributes_path is not None:
        raw = read_attributes(attributes_path)
        if (directory / MAP_FILE).is_file():
            mapping = read_item_map(directory / MAP_FILE)
            attributes = {mapping[item]: attrs for item, attrs in raw.items() if item in mapping}
            notes.append(f"attributes from {attributes_path}, mapped through {MAP_FILE}")
        else:
            attributes = raw
            notes.append(f"attributes from {attributes_path}")
    else:
        notes.append("no attributes file: items have no category or brand")
    items_out = _items(items_path, item_ids, attributes)
    return Dataset(name, items_out, sort_events(events), synthetic_time=False, notes=notes)


def read_attributes(path: Path) -> dict[str, list[int]]:
    """``{"item": [attribute ids]}``, each list in S3-Rec's order: brand first (if kept), then categories."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise DataFormatError(path, 1, "expected a JSON object mapping item ids to lists of attribute ids")
    out: dict[str, list[int]] = {}
    for item, attrs in data.items():
        if not isinstance(attrs, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in attrs
        ):
            raise DataFormatError(path, 1, f"item {item!r}: expected a list of integer attribute ids")
        out[str(item)] = attrs
    return out


def read_item_map(path: Path) -> dict[str, str]:
    """``s3rec_item<TAB>time_item`` rows (with that header) -> {S3-Rec id: timestamped data set's id}."""
    out: dict[str, str] = {}
    with Path(path).open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split("\t")
            if line_number == 1 and fields == ["s3rec_item", "time_item"]:
                continue
            if len(fields) != 2 or not all(fields):
                raise DataFormatError(
                    Path(path), line_number, f"expected two tab-separated ids, got {line!r}"
                )
            out[fields[0]] = fields[1]
    return out


def item_fields(attrs: list[int], brands: frozenset[int]) -> tuple[str, str]:
    """(category path, brand) of an item's S3-Rec attribute ids.

    S3-Rec writes an item's brand first, then its category levels, root first. A brand is never a category, so
    an attribute id that only ever appears first in any item's list is taken as a brand (``brands``); the rest
    form the category path ``a17/a2/a39``. A list that names a second root category (a second category path)
    is cut there: an Aisle item has one path.
    """
    rest = attrs
    brand = ""
    if attrs and attrs[0] in brands:
        brand, rest = f"b{attrs[0]}", attrs[1:]
    path: list[str] = []
    for attr in rest:
        token = f"a{attr}"
        if token in path:
            break
        path.append(token)
    return "/".join(path), brand


def brand_ids(attributes: dict[str, list[int]]) -> frozenset[int]:
    """Attribute ids that only ever appear first in a list: brands (see `item_fields`)."""
    first: set[int] = set()
    later: set[int] = set()
    for attrs in attributes.values():
        if attrs:
            first.add(attrs[0])
            later.update(attrs[1:])
    return frozenset(first - later)


def _items(
    path: Path, item_ids: dict[str, int], attributes: dict[str, list[int]]
) -> dict[str, catalog_pb2.Item]:
    brands = brand_ids(attributes)
    items: dict[str, catalog_pb2.Item] = {}
    for item, line in item_ids.items():
        attrs = attributes.get(item, [])
        category, brand = item_fields(attrs, brands)
        extra = {"s3rec_attributes": ",".join(map(str, attrs))} if attrs else {}
        items[item] = make_item(path, line, item, category, brand, extra)
    return items


def _read_sequences(path: Path) -> dict[str, tuple[int, list[str]]]:
    """user -> (line number, the line's other tokens); each line names a new user and one item or more."""
    out: dict[str, tuple[int, list[str]]] = {}
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                raise DataFormatError(path, line_number, "empty line")
            if len(tokens) < 2:
                raise DataFormatError(path, line_number, f"user {tokens[0]} has no items")
            user = tokens[0]
            if user in out:
                raise DataFormatError(path, line_number, f"user {user} already on line {out[user][0]}")
            out[user] = (line_number, tokens[1:])
    if not out:
        raise DataFormatError(path, 1, "empty file")
    return out


def _required(directory: Path, pattern: str, ignore: frozenset[str] | set[str] = frozenset()) -> Path:
    found = _single(directory, pattern, required=True, ignore=ignore)
    if found is None:  # _single raised already; this tells the type checker
        raise DataFormatError(directory, 0, f"no file matches {pattern}")
    return found


def _single(
    directory: Path, pattern: str, required: bool, ignore: frozenset[str] | set[str] = frozenset()
) -> Path | None:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    found = sorted(p for p in directory.glob(pattern) if p.name not in ignore)
    if len(found) > 1:
        raise DataFormatError(
            directory, 0, f"several files match {pattern}: {', '.join(p.name for p in found)}"
        )
    if not found:
        if required:
            raise DataFormatError(directory, 0, f"no file matches {pattern}")
        return None
    return found[0]
