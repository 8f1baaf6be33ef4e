"""Training data for the two-tower model, built from a :class:`~trainer.data.dataset.Dataset`.

The user tower reads, at serving time, the fold's ``UserState.recent``: the user's last 50 item events as
``(ts_ms, EventType, item_id)``, oldest first, repeats included (``feature_worker.fold._insert_recent``). Training
sequences are built here the same way, so that training and serving see the same input:

- every event whose ``acted_items`` is not empty enters the sequence, once per acted item, with its type
  (views, clicks, carts, cart removals and purchases; searches and impressions act on no item);
- events are taken in the data set's order, which is ``ts_ms`` order with ties in order of arrival, exactly the
  order ``_insert_recent`` keeps (it inserts after every entry with the same timestamp);
- an item unknown to the vocabulary is dropped, never padded;
- sequences are **left-padded** with 0, newest last; item index = 1 + row of ``item_ids.txt``.

This module needs numpy only (no torch), so the evaluation script and tests can build inputs without a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from feature_worker.fold import acted_items
from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import INTERACTION_TYPES

#: Distinct EventType numbers the type embedding must hold (``aisle.v1.EventType`` is 0..7).
NUM_EVENT_TYPES = 8
#: Price bands of the item tower (band 0 = no price).
PRICE_BANDS = 10


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Items and their attributes as integer indices; index 0 of every table means "none / padding".

    ``item_ids[j]`` is item index ``j + 1`` (FAISS label ``j``). The attribute arrays have one entry per item
    index, 0 included, so that a lookup by item index needs no shift.
    """

    item_ids: tuple[str, ...]
    index: dict[str, int]
    brand: np.ndarray  # int64 [n + 1]
    leaf: np.ndarray  # int64 [n + 1]: the item's full category path
    top: np.ndarray  # int64 [n + 1]: the top-level category
    price: np.ndarray  # int64 [n + 1]: price band, 0 when unknown
    brands: int  # table sizes, padding included
    leaves: int
    tops: int
    prices: int

    @property
    def size(self) -> int:
        """Number of items (not counting padding)."""
        return len(self.item_ids)

    def encode(self, item_id: str) -> int:
        """Item index of ``item_id``; 0 when unknown."""
        return self.index.get(item_id, 0)


def build_vocabulary(items: dict[str, catalog_pb2.Item], events: Iterable[events_pb2.Event]) -> Vocabulary:
    """Every catalog item (in catalog order), then items only seen in events (sorted, for determinism)."""
    ids: list[str] = list(items)
    known = set(ids)
    extra: set[str] = set()
    for event in events:
        for item in acted_items(event):
            if item not in known:
                extra.add(item)
    ids.extend(sorted(extra))
    index = {item: row + 1 for row, item in enumerate(ids)}

    def table() -> dict[str, int]:
        return {}

    brand_of, leaf_of, top_of = table(), table(), table()
    n = len(ids)
    brand = np.zeros(n + 1, dtype=np.int64)
    leaf = np.zeros(n + 1, dtype=np.int64)
    top = np.zeros(n + 1, dtype=np.int64)
    prices = np.zeros(n + 1, dtype=np.float64)
    for row, item_id in enumerate(ids, start=1):
        record = items.get(item_id)
        if record is None:
            continue
        if record.brand:
            brand[row] = brand_of.setdefault(record.brand, len(brand_of) + 1)
        path = [part for part in record.category.split("/") if part]
        if path:
            leaf[row] = leaf_of.setdefault("/".join(path), len(leaf_of) + 1)
            top[row] = top_of.setdefault(path[0], len(top_of) + 1)
        prices[row] = record.price if record.price > 0 else 0.0
    band = np.zeros(n + 1, dtype=np.int64)
    priced = prices > 0
    if priced.any():
        # Quantile bands: prices span orders of magnitude, so equal-count bands say more than equal-width ones.
        edges = np.quantile(prices[priced], np.linspace(0, 1, PRICE_BANDS + 1)[1:-1])
        band[priced] = 1 + np.searchsorted(edges, prices[priced], side="right")
    return Vocabulary(
        item_ids=tuple(ids),
        index=index,
        brand=brand,
        leaf=leaf,
        top=top,
        price=band,
        brands=len(brand_of) + 1,
        leaves=len(leaf_of) + 1,
        tops=len(top_of) + 1,
        prices=PRICE_BANDS + 1 if priced.any() else 1,
    )


@dataclass(slots=True)
class UserStream:
    """One user's item events as the fold's ``recent`` would see them (uncapped), oldest first.

    ``learn[i]`` says whether position ``i`` is a prediction target: an interaction with an item new to the user
    (the protocols only ever ask for new items, and the server excludes the user's history).
    """

    items: np.ndarray  # int64
    types: np.ndarray  # int64
    learn: np.ndarray  # bool


def stream_lists(
    events: Iterable[events_pb2.Event], index: Mapping[str, int]
) -> dict[str, tuple[list[int], list[int], list[bool]]]:
    """Each user's (item codes, event types, learn flags) in the order of ``events``, users in order of their first
    item event.

    Items missing from ``index`` are dropped (as the server drops items unknown to a bundle) but still count as
    seen: ``learn`` marks an interaction with an item new to the user, whether or not earlier items were coded.
    """
    out: dict[str, tuple[list[int], list[int], list[bool]]] = {}
    seen: dict[str, set[str]] = {}
    for event in events:
        acted = acted_items(event)
        if not acted:
            continue
        user = event.user_id
        lists = out.get(user)
        if lists is None:
            lists = out[user] = ([], [], [])
            seen[user] = set()
        u_items, u_types, u_learn = lists
        u_seen = seen[user]
        interaction = event.type in INTERACTION_TYPES
        for item in acted:
            code = index.get(item)
            if code is not None:
                u_items.append(code)
                u_types.append(int(event.type))
                u_learn.append(interaction and item not in u_seen)
            u_seen.add(item)
    return out


def user_streams(events: Iterable[events_pb2.Event], vocab: Vocabulary) -> dict[str, UserStream]:
    """Each user's stream of item events (see the module docstring), in the order of ``events``."""
    return {
        user: UserStream(
            np.asarray(items, dtype=np.int64),
            np.asarray(types, dtype=np.int64),
            np.asarray(learn, dtype=bool),
        )
        for user, (items, types, learn) in stream_lists(events, vocab.index).items()
    }


def left_pad(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """The last ``width`` entries of each row, left-padded with 0 to ``width`` columns (newest last)."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        tail = row[-width:] if width else row[:0]
        if len(tail):
            out[r, width - len(tail) :] = tail
    return out


@dataclass(slots=True)
class Windows:
    """Training windows: ``inputs[i]`` predicts ``targets[i]`` at every position where ``weights`` is set.

    Rows are ragged (kept unpadded) and sorted by length, so a batch is padded only to its own longest row.
    """

    items: list[np.ndarray]
    types: list[np.ndarray]
    targets: list[np.ndarray]
    mask: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def positions(self) -> int:
        """Number of positions that carry a loss."""
        return int(sum(int(m.sum()) for m in self.mask))


def training_windows(streams: Iterable[UserStream], max_len: int) -> Windows:
    """Cut each stream into windows of ``max_len`` inputs, each followed by its next event as target.

    A stream of n events gives inputs ``s[:-1]`` and targets ``s[1:]``; streams longer than ``max_len + 1`` are
    cut into consecutive windows ending at the newest event, so that long histories are not thrown away (each
    window sees at most ``max_len`` events, as the served tower does). Windows without a single target are
    dropped.
    """
    out = Windows([], [], [], [])
    for stream in streams:
        n = len(stream.items)
        end = n
        while end >= 2:
            start = max(0, end - max_len - 1)
            mask = stream.learn[start + 1 : end]
            if mask.any():
                out.items.append(stream.items[start : end - 1])
                out.types.append(stream.types[start : end - 1])
                out.targets.append(stream.items[start + 1 : end])
                out.mask.append(mask)
            end = start + 1 if start > 0 else 0
    order = sorted(range(len(out.items)), key=lambda i: len(out.items[i]))
    return Windows(
        [out.items[i] for i in order],
        [out.types[i] for i in order],
        [out.targets[i] for i in order],
        [out.mask[i] for i in order],
    )


def batches_by_length(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of indices of rows with similar lengths, in a random order.

    ``lengths`` must be sorted. Rows are shuffled within runs of equal length before cutting, so the batches
    differ from epoch to epoch while each stays padded to about its own length.
    """
    lengths_arr = np.asarray(lengths)
    order = np.arange(len(lengths_arr))
    # Random key within each length: sort by (length, random), then cut.
    keys = rng.random(len(order))
    order = np.lexsort((keys, lengths_arr))
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]
