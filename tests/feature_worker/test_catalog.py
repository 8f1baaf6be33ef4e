from __future__ import annotations

from feature_worker.catalog import Catalog, category_prefixes
from tests.shop import item


def test_category_prefixes() -> None:
    assert category_prefixes("a/b/c") == ("a", "a/b", "a/b/c")
    assert category_prefixes("/a//b/") == ("a", "a/b")
    assert category_prefixes("") == ()


def test_upsert_replaces_and_reindexes_delete_unindexes() -> None:
    catalog = Catalog()
    catalog.upsert(item("x", category="a/b", brand="k"))
    assert catalog.by_category["a"] == {"x"} and catalog.by_brand["k"] == {"x"}
    catalog.upsert(item("x", category="c", brand="m", in_stock=False))
    assert "a" not in catalog.by_category and catalog.by_category["c"] == {"x"}
    assert "k" not in catalog.by_brand and not catalog.items["x"].in_stock
    version = catalog.version
    assert catalog.delete(["x", "missing"]) == 1
    assert not catalog.items and not catalog.by_category and catalog.version > version
