"""Ranked item lists derived from the shop-wide counters: popular (overall, per category and per brand) and
trending (overall and per category).

Rebuilding them costs a sort over the catalog, so the server refreshes them off the request path
(`TopLists.build` from a background task) and requests read the last build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feature_worker.catalog import Catalog
from feature_worker.stores.base import ItemStats

#: Items kept per list: enough for candidates and backfill, small enough to rebuild often.
LIST_LENGTH = 200


@dataclass(slots=True)
class TopLists:
    """Item ids best first, with the score each list was sorted by (in stock or not: rules decide)."""

    popular: list[str] = field(default_factory=list)
    popular_by_category: dict[str, list[str]] = field(default_factory=dict)
    popular_by_brand: dict[str, list[str]] = field(default_factory=dict)
    trending_by_category: dict[str, list[str]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    trending: dict[str, float] = field(default_factory=dict)
    max_popularity: float = 0.0
    clock_ms: int = 0

    @classmethod
    def build(cls, stats: ItemStats, catalog: Catalog, length: int = LIST_LENGTH) -> TopLists:
        """Rank the catalog's items by popularity and trend; items outside the catalog are ignored."""
        popularity = {item: w for item, w in stats.popularity.items() if item in catalog.items}
        trending = {item: w for item, w in stats.trending.items() if w > 0 and item in catalog.items}
        by_pop = sorted(popularity, key=lambda item: (-popularity[item], item))
        by_trend = sorted(trending, key=lambda item: (-trending[item], item))
        popular_by_category: dict[str, list[str]] = {}
        trending_by_category: dict[str, list[str]] = {}
        popular_by_brand: dict[str, list[str]] = {}
        items = catalog.items
        for ranked, lists in ((by_pop, popular_by_category), (by_trend, trending_by_category)):
            for item in ranked:
                for prefix in items[item].categories:
                    bucket = lists.setdefault(prefix, [])
                    if len(bucket) < length:
                        bucket.append(item)
        for item in by_pop:
            brand = items[item].brand
            if brand:
                bucket = popular_by_brand.setdefault(brand, [])
                if len(bucket) < length:
                    bucket.append(item)
        return cls(
            popular=by_pop[:length],
            popular_by_category=popular_by_category,
            popular_by_brand=popular_by_brand,
            trending_by_category=trending_by_category,
            popularity=popularity,
            trending=trending,
            max_popularity=popularity[by_pop[0]] if by_pop else 0.0,
            clock_ms=stats.clock_ms,
        )
