"""The item catalog held in process memory, with the indexes the fold and the recommender use.

Both the fold (category and brand of an item, for affinities) and the server (candidates by category
and brand, stock, filters) read it; it is updated from CatalogService calls or the `aisle.items` topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from sys import intern

from protos.aisle.v1 import catalog_pb2


def category_prefixes(path: str) -> tuple[str, ...]:
    """`"a/b/c"` -> `("a", "a/b", "a/b/c")`: every level an item belongs to, deepest last."""
    parts = [p for p in path.split("/") if p]
    return tuple(intern("/".join(parts[: i + 1])) for i in range(len(parts)))


@dataclass(slots=True, frozen=True)
class ItemInfo:
    """What the hot paths need of an item, without protobuf access costs."""

    item_id: str
    category: str
    categories: tuple[str, ...]
    brand: str
    price: float
    in_stock: bool


class Catalog:
    """Items by id, plus item sets by category prefix and by brand.

    `version` grows with every change, so caches derived from the catalog know when to rebuild.
    """

    def __init__(self) -> None:
        self._records: dict[str, catalog_pb2.Item] = {}
        self.items: dict[str, ItemInfo] = {}
        self.by_category: dict[str, set[str]] = {}
        self.by_brand: dict[str, set[str]] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.items

    def get(self, item_id: str) -> ItemInfo | None:
        return self.items.get(item_id)

    def record(self, item_id: str) -> catalog_pb2.Item | None:
        """The item as it was last upserted."""
        return self._records.get(item_id)

    def records(self) -> Iterator[catalog_pb2.Item]:
        return iter(self._records.values())

    def upsert(self, item: catalog_pb2.Item) -> None:
        """Insert or replace an item whole."""
        self._unindex(item.item_id)
        stored = catalog_pb2.Item()
        stored.CopyFrom(item)
        # Ids and names are interned (as the fold interns the ids it stores): the serving path's lookups of them
        # then match by identity.
        item_id = intern(item.item_id)
        info = ItemInfo(
            item_id=item_id,
            category=item.category,
            categories=category_prefixes(item.category),
            brand=intern(item.brand),
            price=item.price,
            in_stock=item.in_stock,
        )
        self._records[item_id] = stored
        self.items[item_id] = info
        for prefix in info.categories:
            self.by_category.setdefault(prefix, set()).add(item_id)
        if info.brand:
            self.by_brand.setdefault(info.brand, set()).add(item_id)
        self.version += 1

    def upsert_many(self, items: Iterable[catalog_pb2.Item]) -> int:
        count = 0
        for item in items:
            self.upsert(item)
            count += 1
        return count

    def delete(self, item_ids: Iterable[str]) -> int:
        """Remove items; returns how many existed."""
        deleted = 0
        for item_id in item_ids:
            if self._unindex(item_id):
                deleted += 1
                self.version += 1
        return deleted

    def _unindex(self, item_id: str) -> bool:
        info = self.items.pop(item_id, None)
        self._records.pop(item_id, None)
        if info is None:
            return False
        for prefix in info.categories:
            members = self.by_category.get(prefix)
            if members is not None:
                members.discard(item_id)
                if not members:
                    del self.by_category[prefix]
        if info.brand:
            brand_items = self.by_brand.get(info.brand)
            if brand_items is not None:
                brand_items.discard(item_id)
                if not brand_items:
                    del self.by_brand[info.brand]
        return True
