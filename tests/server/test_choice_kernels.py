"""The compiled passes of the answer's last steps give what their plain definitions give: the rules over every
candidate at once (`Rules.allowed_rows`), order and diversity in one pass (`top_rows`), the order of an item's
reasons (`_reason_order`), and the item rows they read (`item_rows`)."""

from __future__ import annotations

import numpy as np

from feature_worker.catalog import Catalog
from server.ranking.diversity import best_first, cap_per_group, top_rows
from server.ranking.rules import Rules
from server.recommender import _reason_order
from server.retrieval.candidates import SOURCES
from server.retrieval.item_index import ItemIndex
from server.retrieval.item_rows import (
    ITEM_BRAND,
    ITEM_ID_RANK,
    ITEM_LEAF,
    ITEM_LOG_POPULARITY,
    ITEM_LOG_TRENDING,
    ITEM_PRICE,
    ITEM_TOP,
    item_rows,
)
from tests.shop import item

CATEGORIES = ("beauty/skin", "beauty/hair", "beauty/skin/serum", "home/kitchen")


def _index() -> tuple[Catalog, ItemIndex]:
    catalog = Catalog()
    catalog.upsert_many(
        item(f"i{n:03d}", category=CATEGORIES[n % len(CATEGORIES)], in_stock=n % 7 != 0) for n in range(120)
    )
    return catalog, ItemIndex(catalog)


def test_allowed_rows_are_the_rows_whose_items_the_rules_allow_and_top_rows_orders_and_caps_them() -> None:
    catalog, index = _index()
    items = item_rows(index, np.zeros(0), np.zeros(0))
    rng = np.random.default_rng(5)
    for case in range(300):
        positions = np.sort(rng.choice(len(index), size=int(rng.integers(0, 80)), replace=False)).astype(
            np.int64
        )
        # Few distinct scores, so ties (broken by item id) are common.
        scores = rng.integers(0, 6, size=len(positions)).astype(np.float64) / 5.0
        exclude = {index.ids[p] for p in rng.choice(len(index), size=int(rng.integers(0, 6)))}
        exclude.add("not-in-the-catalog")
        bought = frozenset(index.ids[p] for p in rng.choice(len(index), size=int(rng.integers(0, 3))))
        prefix = ("", "beauty", "beauty/skin", "home")[case % 4]
        rules = Rules(catalog, frozenset(exclude), prefix, bought)
        k, cap = int(rng.integers(1, 15)), int(rng.integers(-1, 4))

        allowed = rules.allowed_rows(index, positions)
        assert allowed.tolist() == [r for r, p in enumerate(positions) if rules.allows(index.ids[p])], (
            f"case {case}"
        )

        order = allowed[best_first(scores[allowed], index.id_rank[positions[allowed]])]
        expected = cap_per_group(order, index.leaf[positions], k, cap)
        picked = top_rows(scores[allowed], allowed, positions, items, k, cap)
        assert allowed[picked].tolist() == expected.tolist(), f"case {case}"


def test_reasons_are_ordered_by_weighted_share_with_ties_in_source_order() -> None:
    rng = np.random.default_rng(3)
    k = len(SOURCES)
    for case in range(200):
        n = int(rng.integers(1, 30))
        scores = rng.integers(0, 4, size=(k, n)).astype(np.float64) / 3.0  # zeros and ties on purpose
        args = rng.integers(-1, 9, size=(k, n)).astype(np.int64)
        weights = np.maximum(rng.integers(0, 3, size=k).astype(np.float64), 0.01)
        rows = rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).astype(np.int64)

        order, found_args = _reason_order(weights, scores, args, rows)

        shares = weights[:, None] * scores[:, rows]
        by_share = np.argsort(-shares, axis=0, kind="stable").T
        for j in range(len(rows)):
            present = [int(s) for s in by_share[j] if shares[s, j] > 0.0]
            assert order[j, : len(present)].tolist() == present, f"case {case}"
            assert (order[j, len(present) :] == -1).all()
            assert found_args[j, : len(present)].tolist() == [int(args[s, rows[j]]) for s in present]


def test_item_rows_hold_the_index_columns_one_cache_line_per_item() -> None:
    _, index = _index()
    popularity, trend = np.linspace(0, 3, len(index)), np.linspace(5, 1, len(index))
    items = item_rows(index, popularity, trend)
    assert items.shape == (len(index), 8) and items.ctypes.data % 64 == 0 and items.strides[0] == 64
    for column, expected in [
        (ITEM_LEAF, index.leaf),
        (ITEM_TOP, index.top),
        (ITEM_BRAND, index.brand),
        (ITEM_PRICE, index.price),
        (ITEM_LOG_POPULARITY, popularity),
        (ITEM_LOG_TRENDING, trend),
        (ITEM_ID_RANK, index.id_rank),
    ]:
        assert items[:, column].tolist() == np.asarray(expected, dtype=np.float64).tolist()
    no_lists = item_rows(index, np.zeros(0), np.zeros(0))
    assert not no_lists[:, [ITEM_LOG_POPULARITY, ITEM_LOG_TRENDING]].any()
