"""The list sources that read the top lists by number (`GroupLists`), in one compiled pass: the seeded ones
(`brand`, `content`: each seed's brand or category list) and `trending_in_categories`."""

from __future__ import annotations

import numpy as np
import pytest

from feature_worker.catalog import Catalog
from feature_worker.state import UserState
from feature_worker.stores.base import ItemStats, RequestFeatures
from server.retrieval import sources
from server.retrieval.candidates import BRAND, CONTENT, TRENDING, CandidateSet
from server.retrieval.toplists import TopLists
from tests.shop import item

#: Popularity of each item: "a*" of brand acme in category skin, "b*" of brand bold in category skin, "h*" of
#: brand acme in category hair; "lone" in a category and brand of its own, with no popularity at all.
POPULARITY = {"a1": 40.0, "a2": 30.0, "a3": 20.0, "b1": 35.0, "b2": 10.0, "h1": 25.0, "h2": 5.0}
#: Today's trend: no trend for a3, b2 and h2.
TREND = {"a1": 2.0, "b1": 8.0, "a2": 4.0, "h1": 3.0}


@pytest.fixture
def lists() -> TopLists:
    catalog = Catalog()
    catalog.upsert_many(item(i, category="beauty/skin", brand="acme") for i in ("a1", "a2", "a3"))
    catalog.upsert_many(item(i, category="beauty/skin", brand="bold") for i in ("b1", "b2"))
    catalog.upsert_many(item(i, category="beauty/hair", brand="acme") for i in ("h1", "h2"))
    catalog.upsert_many([item("lone", category="garden", brand="solo")])
    return TopLists.build(ItemStats(POPULARITY, TREND, 0), catalog)


def seeds_of(lists: TopLists, *items: str) -> list[sources.Seed]:
    assert lists.index is not None
    return [sources.Seed(i, 1.0 / (n + 1), False, lists.index.position[i]) for n, i in enumerate(items)]


def proposals(pool: CandidateSet, source: int, lists: TopLists) -> list[tuple[str, float, int]]:
    """(item, score, reason argument) as the source added them, in order."""
    assert lists.index is not None
    out: list[tuple[str, float, int]] = []
    for positions, scores, args in pool.added(source):
        out += zip(lists.index.names(positions), scores.tolist(), args.tolist())
    return out


def test_group_lists_hold_each_groups_popular_items_by_number(lists: TopLists) -> None:
    index = lists.index
    assert index is not None
    by_popularity = sorted(POPULARITY, key=lambda i: -POPULARITY[i])
    skin = [i for i in by_popularity if i[0] in "ab"]
    expected = [
        (lists.popular_by_brand, index.brand_id["acme"], [i for i in by_popularity if i[0] in "ah"]),
        (lists.popular_by_brand, index.brand_id["bold"], [i for i in by_popularity if i[0] == "b"]),
        (lists.popular_by_category, index.category_id["beauty"], by_popularity),
        (lists.popular_by_category, index.category_id["beauty/skin"], skin),
        (lists.popular_by_category, index.category_id["beauty/hair"], ["h1", "h2"]),
    ]
    for groups, number, items in expected:
        assert index.names(groups.of(number)) == items
    assert index.names(lists.popular_in("beauty/skin")) == skin
    assert len(lists.popular_in("no/such/category")) == 0 and len(lists.popular_by_brand.of(-1)) == 0
    solo = index.brand_id["solo"]
    assert lists.popular_by_brand.starts[solo] == lists.popular_by_brand.ends[solo]  # no popular item: empty


def test_brand_proposes_each_seeds_best_sellers_but_the_seed(lists: TopLists) -> None:
    assert lists.index is not None
    pool = CandidateSet()
    # Seed 0 is a2 (acme), seed 1 b1 (bold); no co-visits, so each seed weighs what it weighs.
    sources.brand(
        seeds_of(lists, "a2", "b1"), RequestFeatures(None, {}), lists, lists.index, pool, per_seed=3
    )
    found = proposals(pool, BRAND, lists)
    assert [(i, a) for i, _, a in found] == [("a1", 0), ("h1", 0), ("b2", 1)]  # acme's first 3 are a1 a2 h1
    exponent = sources.BRAND_POPULARITY_EXPONENT
    expected = [1.0, (25.0 / 40.0) ** exponent, 0.5 * (10.0 / 35.0) ** exponent]
    np.testing.assert_allclose([s for _, s, _ in found], expected, rtol=1e-15)


def test_co_visits_shrink_a_seeds_brand_share(lists: TopLists) -> None:
    assert lists.index is not None
    pool = CandidateSet()
    covis = {"a2": [("b2", 50.0)]}  # as many co-visits as `BRAND_SHRINKAGE`: half the share
    sources.brand(seeds_of(lists, "a2"), RequestFeatures(None, covis), lists, lists.index, pool, per_seed=1)
    assert proposals(pool, BRAND, lists) == [("a1", 0.5, 0)]


def test_content_ranks_the_category_same_brand_first(lists: TopLists) -> None:
    assert lists.index is not None
    pool = CandidateSet()
    sources.content(seeds_of(lists, "a2", "lone", "h2"), lists, lists.index, pool)
    # skin by popularity: a1 b1 a2 a3 b2; a2 is the seed (its rank is skipped, not given to the next).
    skin = [("a1", 1.0), ("b1", 0.5 / 1.1), ("a3", 1 / 1.3), ("b2", 0.5 / 1.4)]
    # "lone" (seed 1) has a category with no popular item: nothing, but it counts towards `CONTENT_SEEDS`.
    hair = [("h1", 1.0 / 3)]  # seed 2 weighs 1/3
    found = proposals(pool, CONTENT, lists)
    assert [(i, a) for i, _, a in found] == [(i, 0) for i, _ in skin] + [(i, 2) for i, _ in hair]
    np.testing.assert_allclose([s for _, s, _ in found], [s for _, s in skin + hair], rtol=1e-15)


def test_only_the_first_seeds_with_a_group_propose(lists: TopLists, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lists.index is not None
    monkeypatch.setattr(sources, "CONTENT_SEEDS", 1)
    pool = CandidateSet()
    unknown = sources.Seed("not-in-the-catalog", 1.0, False, -1)
    sources.content([unknown, *seeds_of(lists, "h2", "a1")], lists, lists.index, pool)
    assert {a for _, _, a in proposals(pool, CONTENT, lists)} == {
        1
    }  # h2 only: the unknown item does not count


def test_trending_takes_the_users_deepest_categories_by_share(lists: TopLists) -> None:
    assert lists.index is not None
    pool = CandidateSet()
    user = UserState(
        category_affinity={"beauty": 9.0, "beauty/skin": 3.0, "beauty/hair": 1.0, "nowhere/x": 5.0}
    )
    sources.trending_in_categories(user, lists, lists.index, pool, per_category=2)
    # The three deepest: nowhere/x (not in the catalog: nothing), then beauty/skin and beauty/hair, shares of 9.
    skin, hair = lists.index.category_id["beauty/skin"], lists.index.category_id["beauty/hair"]
    assert proposals(pool, TRENDING, lists) == [
        ("b1", 3 / 9 * 8.0 / 8.0, skin),
        ("a2", 3 / 9 * 4.0 / 8.0, skin),
        ("h1", 1 / 9 * 3.0 / 3.0, hair),
    ]
