"""The catalog: leaves of the taxonomy, brands, prices, popularity and stock, and the items as messages."""

from __future__ import annotations

import math

import numpy as np

from protos.aisle.v1 import catalog_pb2
from trainer.generate.model import IN_STOCK, POPULARITY_EXPONENT, CatalogArrays, IntArray
from trainer.taxonomy import (
    BRAND_HEADS,
    BRAND_MIDDLES,
    BRAND_TAILS,
    DEPARTMENTS,
    SCHEMAS,
    TAXONOMY,
    Leaf,
    all_leaves,
)


def _choose_leaves(items: int, rng: np.random.Generator) -> list[Leaf]:
    """About sqrt(items) leaves, taken round-robin over the departments so that small shops stay varied."""
    candidates = all_leaves()
    wanted = min(len(candidates), max(1, round(math.sqrt(items))))
    by_department: list[list[Leaf]] = [[] for _ in DEPARTMENTS]
    for leaf in candidates:
        by_department[leaf.department].append(leaf)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_department]
    chosen: list[Leaf] = []
    for d in rng.permutation(len(queues)).tolist() * max(len(q) for q in queues):
        if len(chosen) == wanted:
            break
        if queues[d]:
            chosen.append(queues[d].pop())
    return sorted(chosen, key=candidates.index)


def _brand_names(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct made-up brand names."""
    pool = sorted(
        {head + middle + tail for head in BRAND_HEADS for middle in BRAND_MIDDLES for tail in BRAND_TAILS}
    )
    names = [pool[i] for i in rng.permutation(len(pool))[:count]]
    # The pool (4,800 names) is far above what a large catalog needs; numbered names keep absurd sizes working.
    names += [f"{pool[i % len(pool)]} {i // len(pool) + 1}" for i in range(len(names), count)]
    return names


def build_catalog(items: int, rng: np.random.Generator) -> CatalogArrays:
    leaves = _choose_leaves(items, rng)
    n_leaves = len(leaves)
    leaf_department = np.array([leaf.department for leaf in leaves])

    # Every leaf gets an item, the rest spread unevenly (some leaves are deep, some shallow).
    per_leaf = 1 + rng.multinomial(items - n_leaves, rng.dirichlet(np.full(n_leaves, 4.0)))
    item_leaf = rng.permutation(np.repeat(np.arange(n_leaves), per_leaf))
    item_department = leaf_department[item_leaf]

    # Brands belong to one department; sizes are long-tailed (Zipf), about one brand per 25 items.
    item_brand = np.zeros(items, dtype=np.int64)
    n_brands_total = 0
    for d in range(len(DEPARTMENTS)):
        members = np.flatnonzero(item_department == d)
        if len(members) == 0:
            continue
        n_brands = min(len(members), max(2, round(len(members) / 25)))
        weights = 1.0 / np.arange(1, n_brands + 1)
        item_brand[members] = n_brands_total + rng.choice(
            n_brands, size=len(members), p=weights / weights.sum()
        )
        n_brands_total += n_brands
    brand_names = _brand_names(n_brands_total, rng)
    brand_price_tier = rng.lognormal(0.0, 0.3, n_brands_total)

    median = np.array([leaf.median_price for leaf in leaves])[item_leaf]
    raw_price = median * brand_price_tier[item_brand] * rng.lognormal(0.0, 0.35, items)
    # Shops price at .99 above ten; cheap goods keep their cents.
    price = np.where(raw_price >= 10, np.ceil(raw_price) - 0.01, np.maximum(0.49, np.round(raw_price, 2)))

    log_price = np.log(price)
    price_z = np.zeros(items)
    for members in group(item_leaf, n_leaves):
        spread = log_price[members].std()
        if spread > 0:
            price_z[members] = (log_price[members] - log_price[members].mean()) / spread

    log_pop = -POPULARITY_EXPONENT * np.log1p(rng.permutation(items).astype(np.float64))
    in_stock = rng.random(items) < IN_STOCK

    department_share = np.array([spec.share for spec in TAXONOMY.values()])
    leaf_share = department_share[leaf_department] * rng.lognormal(0.0, 0.5, n_leaves)
    leaf_share /= leaf_share.sum()

    items_by_leaf = group(item_leaf, n_leaves)
    order = np.concatenate(items_by_leaf)
    key = np.empty(items)
    start = 0
    for leaf_index, members in enumerate(items_by_leaf):
        cdf = np.cumsum(np.exp(log_pop[members]))
        cdf /= cdf[-1]
        cdf[-1] = 1.0  # exactly, so that a draw below 1 never falls into the next leaf
        key[start : start + len(members)] = leaf_index + cdf
        start += len(members)

    return CatalogArrays(
        leaves=leaves,
        leaf_share=leaf_share,
        item_leaf=item_leaf,
        item_brand=item_brand,
        brand_names=brand_names,
        price=price,
        price_z=price_z,
        log_pop=log_pop,
        in_stock=in_stock,
        items_by_leaf=items_by_leaf,
        leaf_item_key=key,
        leaf_item_order=order,
    )


def group(labels: IntArray, count: int) -> list[IntArray]:
    """Indices of each label 0..count-1, ascending within a label."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(count)]


def sample_in_leaf(catalog: CatalogArrays, leaf: IntArray, rng: np.random.Generator) -> IntArray:
    """One item per entry of ``leaf``, drawn by popularity within that leaf."""
    position = np.searchsorted(catalog.leaf_item_key, leaf + rng.random(len(leaf)), side="right")
    return catalog.leaf_item_order[np.minimum(position, len(catalog.leaf_item_order) - 1)]


def item_messages(catalog: CatalogArrays, rng: np.random.Generator) -> list[catalog_pb2.Item]:
    departments = list(TAXONOMY.values())
    adjective_draw = rng.random(len(catalog.item_leaf))
    value_draw = rng.random((len(catalog.item_leaf), 2))
    prices = catalog.price.tolist()
    in_stock = catalog.in_stock.tolist()
    messages = []
    for i, (leaf_index, brand_index) in enumerate(
        zip(catalog.item_leaf.tolist(), catalog.item_brand.tolist())
    ):
        leaf = catalog.leaves[leaf_index]
        department = departments[leaf.department]
        brand = catalog.brand_names[brand_index]
        adjective = department.adjectives[int(adjective_draw[i] * len(department.adjectives))]
        attributes = {
            name: values[int(value_draw[i, k] * len(values))]
            for k, (name, values) in enumerate(SCHEMAS[leaf.schema].items())
        }
        title = f"{brand} {adjective} {leaf.noun}"
        if attributes:
            title += ", " + next(iter(attributes.values()))
        description = (
            f"{adjective} {leaf.noun.lower()} by {brand}, from our {leaf.subcategory.replace('-', ' ')} range in "
            f"{DEPARTMENTS[leaf.department]}."
        )
        messages.append(
            catalog_pb2.Item(
                item_id=f"i{i + 1}",
                title=title,
                description=description,
                category=leaf.path,
                brand=brand,
                price=prices[i],
                in_stock=in_stock[i],
                attributes=attributes,
            )
        )
    return messages
