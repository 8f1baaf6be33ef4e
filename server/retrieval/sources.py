"""Candidate sources. Each adds the item positions it proposes, their scores and reason arguments to a
`CandidateSet` as arrays (one source, one column).

Scores of one source lie in [0, 1] (times the seed's weight where a seed is involved) so the blend weights
(`BlendWeights`) mean the same thing for every user. The constants below were chosen on validation splits
(`python -m trainer evaluate ... --split valid`: Amazon Beauty, its timestamped copy, a generated shop); see
BENCHMARKS.md for the figures.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from numba import njit

from feature_worker.fold import ADD_TO_CART, CLICK, PURCHASE, REMOVE_FROM_CART, VIEW
from feature_worker.state import UserState
from feature_worker.stores.base import RequestFeatures
from server.retrieval.candidates import (
    BRAND,
    CONTENT,
    COVISITATION,
    ITEM_KNN,
    LEARNED,
    POPULAR,
    TRANSITIONS,
    TRENDING,
    CandidateSet,
)
from server.retrieval.item_index import Floats, Ints, ItemIndex
from server.retrieval.proposals import StateKey, UserProposals
from server.retrieval.toplists import GroupLists, TopLists

if TYPE_CHECKING:
    from server.retrieval.two_tower import TwoTowerRetriever

#: How strongly a past interaction of each type seeds "more like this".
SEED_TYPE_WEIGHT: dict[int, float] = {
    VIEW: 1.0,
    CLICK: 1.2,
    ADD_TO_CART: 1.5,
    PURCHASE: 1.0,
    REMOVE_FROM_CART: 0.2,
}
#: Each older seed counts this much less than the one after it.
SEED_RECENCY_DECAY = 0.65
#: The page the user is on says more about intent right now than any past interaction.
CONTEXT_SEED_WEIGHT = 2.0
MAX_SEEDS = 10
#: Seeds whose category and brand neighbours are added (content source).
CONTENT_SEEDS = 3
CONTENT_PER_SEED = 20
TRENDING_CATEGORIES = 3
#: Seeds whose co-visited items are candidates: older ones weigh under a fifth of the latest (0.65 ** 4) and
#: cost as much to score; all `MAX_SEEDS` are still excluded from the answer.
COVIS_SEEDS = 5
#: A seed's co-visitation counts are divided by (its total co-visits) ** this: 1 would make them the share of
#: the seed's co-visits (what customers did next, as a probability), 0 lets a seed with many co-visits drown
#: the others.
COVIS_SEED_EXPONENT = 0.5
#: ... and by (the neighbour's popularity) ** this, so the shop's best sellers do not follow every seed.
#: Popularity is decayed (what is popular now), which is also a signal, hence a small exponent.
COVIS_POPULARITY_EXPONENT = 0.15
#: Popularity below this (about one fresh view) does not raise a neighbour further: it is noise, or stale.
COVIS_POPULARITY_FLOOR = 1.0
#: Seeds whose brand's best sellers are added (brand source); how many of each is `Tails.brand_per_seed`.
BRAND_SEEDS = 5
#: Within a brand, best sellers lead, but gently: score = (popularity / the brand's best) ** this.
BRAND_POPULARITY_EXPONENT = 0.25
#: Co-visits of a seed at which its brand suggestions count half (see `brand`).
BRAND_SHRINKAGE = 50.0
#: Items the learned source (`two_tower`) adds: enough to fill k = 100 after the rules, at ~0.1 ms of FAISS.
TWO_TOWER_CANDIDATES = 100
#: Items the item-transition source (`transitions`) adds.
TRANSITION_CANDIDATES = 100


@dataclass(frozen=True, slots=True)
class Tails:
    """How far down their lists the sources with long tails go: the popular items, each trending category's and
    each seed brand's best sellers."""

    popular: int
    trending_per_category: int
    brand_per_seed: int


#: Without a bundle the blend ranks, and the long tails are worth their rows (validation NDCG@10 1 % lower with
#: the short ones, on Beauty and on the generated shop).
TAILS = Tails(popular=50, trending_per_category=30, brand_per_seed=30)
#: With a bundle the learned sources find what the tails found for the ranker: the same accuracy on both
#: validation splits with a quarter fewer rows, which is 5 % of a call (BENCHMARKS.md, issue 9, fifth pass).
#: The ranker's training lists are made with these too (a bundle's towers are served while they are made).
TAILS_WITH_BUNDLE = Tails(popular=20, trending_per_category=15, brand_per_seed=15)


class Seed(NamedTuple):
    """An item recommendations grow from. A named tuple, not a frozen dataclass: a request makes up to ten,
    and a frozen dataclass's ``__init__`` costs twice a tuple's (0.57 against 0.26 µs here)."""

    item_id: str
    weight: float
    is_context: bool
    #: Position in the request's `ItemIndex` (-1: not in it).
    position: int = -1


def seeds_for(
    user: UserState | None, context_item_ids: Sequence[str], index: ItemIndex | None = None
) -> list[Seed]:
    """The items recommendations grow from: the context items, then the user's latest distinct items.

    Reason arguments of the seeded sources are numbers in this list (0: the first context item, or the
    user's newest item when there is no context).
    """
    where = index.position.get if index is not None else (lambda _item, _default: -1)
    seeds = [Seed(item, CONTEXT_SEED_WEIGHT, True, where(item, -1)) for item in context_item_ids]
    if user is None:
        return seeds
    seen = set(context_item_ids)
    weight = 1.0
    for _, etype, item in reversed(user.recent):
        if item in seen:
            continue
        seen.add(item)
        seeds.append(Seed(item, weight * SEED_TYPE_WEIGHT.get(etype, 0.5), False, where(item, -1)))
        weight *= SEED_RECENCY_DECAY
        if len(seeds) >= MAX_SEEDS + len(context_item_ids):
            break
    return seeds


def covisitation(
    seeds: Sequence[Seed], features: RequestFeatures, lists: TopLists, index: ItemIndex, pool: CandidateSet
) -> None:
    """Items other customers interacted with next to the seed items.

    A neighbour scores ``seed weight * count / total ** COVIS_SEED_EXPONENT / pop ** COVIS_POPULARITY_EXPONENT``
    per seed (``total``: the seed's co-visits over the neighbours read; ``pop``: the neighbour's popularity),
    summed over seeds, then divided by the best score of the request, not of each seed: a seed seen next to
    one other item once does not count as much as one with a hundred co-visits. The newest seed's own shares
    go to the ranker as the extra column ``covis_latest``.
    """
    # Each seed's list as arrays (converted once per list, `ItemIndex.neighbours`), then one compiled pass.
    parts: list[Ints] = []
    weights: list[Floats] = []
    factors: list[float] = []
    numbers: list[int] = []
    lengths: list[int] = []
    covis = features.covis
    for number, seed in enumerate(seeds[:COVIS_SEEDS]):
        neighbours = covis.get(seed.item_id)
        if not neighbours:
            continue
        positions, counts, total = index.neighbours(seed.item_id, neighbours)
        if total <= 0.0:
            continue
        parts.append(positions)
        weights.append(counts)
        factors.append(seed.weight / total**COVIS_SEED_EXPONENT)
        numbers.append(number)
        lengths.append(len(counts))
    if not parts:
        return
    pos = parts[0] if len(parts) == 1 else np.concatenate(parts)
    score, arg = _covisitation_scores(
        pos,
        weights[0] if len(weights) == 1 else np.concatenate(weights),
        np.array(lengths, dtype=np.int64),
        np.array(factors),
        np.array(numbers, dtype=np.int64),
        lists.popularity_at.astype(np.float64, copy=False),
    )
    if not len(score):
        return
    pool.add(COVISITATION, pos, score, arg)
    latest = arg == 0
    pool.add_extra("covis_latest", pos[latest], score[latest])


def content(seeds: Sequence[Seed], lists: TopLists, index: ItemIndex, pool: CandidateSet) -> None:
    """Popular items of the seed items' own category, same brand first: each of the first `CONTENT_SEEDS` seeds
    with a category proposes the first `CONTENT_PER_SEED` of its category's popular list but itself, scored
    ``1 / (1 + rank / 10)`` (rank in that list), halved for another brand."""
    numbers = _seeds_in_groups(seeds, index.leaf, CONTENT_SEEDS)
    if numbers:
        _add_group_lists(
            pool,
            CONTENT,
            seeds,
            numbers,
            [seeds[n].weight for n in numbers],
            index.leaf,
            lists.popular_by_category,
            CONTENT_PER_SEED + 1,
            CONTENT_PER_SEED,
            False,
            lists,
            index,
        )


def brand(
    seeds: Sequence[Seed],
    features: RequestFeatures,
    lists: TopLists,
    index: ItemIndex,
    pool: CandidateSet,
    per_seed: int = TAILS.brand_per_seed,
) -> None:
    """The best sellers of the seed items' brands: customers who buy a brand come back for more of it. Each of
    the first `BRAND_SEEDS` seeds with a brand proposes its brand's first ``per_seed`` best sellers but itself,
    scored ``(popularity / the brand's best) ** BRAND_POPULARITY_EXPONENT``.

    A guess for seeds with little co-visitation evidence: each seed's share is multiplied by
    ``BRAND_SHRINKAGE / (BRAND_SHRINKAGE + its co-visit count)``, so it fades where what other customers did
    next is known (a shop whose sessions stay in one category) and leads where it is not (a long tail of rare
    items).
    """

    def weight(seed: Seed) -> float:
        neighbours = features.covis.get(seed.item_id)
        covisits = index.neighbours(seed.item_id, neighbours)[2] if neighbours else 0.0
        return seed.weight * BRAND_SHRINKAGE / (BRAND_SHRINKAGE + covisits)

    numbers = _seeds_in_groups(seeds, index.brand, BRAND_SEEDS)
    if numbers:
        _add_group_lists(
            pool,
            BRAND,
            seeds,
            numbers,
            [weight(seeds[n]) for n in numbers],
            index.brand,
            lists.popular_by_brand,
            per_seed,
            per_seed,
            True,
            lists,
            index,
        )


def _seeds_in_groups(seeds: Sequence[Seed], group_at: Ints, limit: int) -> list[int]:
    """The numbers of the first ``limit`` seeds in the index that belong to a group (``group_at[position] >= 0``:
    a brand, a category); a seed whose group has no list still counts."""
    numbers: list[int] = []
    for number, seed in enumerate(seeds):
        if seed.position >= 0 and group_at[seed.position] >= 0:
            numbers.append(number)
            if len(numbers) >= limit:
                break
    return numbers


def _add_group_lists(
    pool: CandidateSet,
    source: int,
    seeds: Sequence[Seed],
    numbers: list[int],
    weights: list[float],
    group_at: Ints,
    groups: GroupLists,
    take: int,
    keep: int,
    by_popularity: bool,
    lists: TopLists,
    index: ItemIndex,
) -> None:
    """Add what the seeds ``numbers`` (weighted ``weights``) propose from their groups' lists, in one compiled
    pass (`_group_proposals`), the seed's number as the reason argument."""
    positions, scores, args = _group_proposals(
        np.array([seeds[n].position for n in numbers], dtype=np.int64),
        np.array(weights),
        np.array(numbers, dtype=np.int64),
        group_at,
        groups.starts,
        groups.ends,
        groups.members,
        take,
        keep,
        by_popularity,
        lists.popularity_at.astype(np.float64, copy=False),
        index.brand,
    )
    pool.add(source, positions, scores, args)


def trending_in_categories(
    user: UserState | None,
    lists: TopLists,
    index: ItemIndex,
    pool: CandidateSet,
    per_category: int = TAILS.trending_per_category,
) -> None:
    """What is trending now in the categories the user cares most about (deepest levels first), the first
    ``per_category`` of each, scored ``the category's share of the user's affinity * trend / its best trend``.

    The reason argument is the category's number in the index.
    """
    if user is None or not user.category_affinity:
        return
    affinity = user.category_affinity
    # Prefer specific categories: rank by depth, then by affinity.
    top = heapq.nsmallest(TRENDING_CATEGORIES, affinity, key=lambda c: (-c.count("/"), -affinity[c], c))
    total = sum(affinity[c] for c in top) or 1.0
    groups = lists.trending_by_category
    positions, scores, args = _trending_proposals(
        np.array([index.category_id.get(c, -1) for c in top], dtype=np.int64),
        np.array([affinity[c] / total for c in top]),
        groups.starts,
        groups.ends,
        groups.members,
        per_category,
        lists.trending_at,
    )
    pool.add(TRENDING, positions, scores, args)


def popular(lists: TopLists, index: ItemIndex, pool: CandidateSet, category_prefix: str, limit: int) -> None:
    """The shop's (or the requested category's) most popular items; the reason argument is the category's
    number (-1: the whole shop)."""
    if category_prefix:
        ranked = lists.popular_in(category_prefix)
        arg = index.category_id.get(category_prefix, -1)
    else:
        ranked, arg = lists.popular_pos, -1
    if not len(ranked):
        return
    ranked = ranked[:limit]
    best = float(lists.popularity_at[ranked[0]]) or 1.0
    pool.add(POPULAR, ranked, lists.popularity_at[ranked] / best, np.full(len(ranked), arg, dtype=np.int64))


def blocked_positions(seeds: Sequence[Seed], exclude_item_ids: Collection[str], index: ItemIndex) -> Ints:
    """Positions in ``index`` of the seeds and of the request's excluded items: what the learned source never
    proposes (the seeds' positions are known already; only the client's exclusions are looked up)."""
    seen = [seed.position for seed in seeds if seed.position >= 0]
    if exclude_item_ids:
        seen.extend(index.positions(exclude_item_ids, len(exclude_item_ids)).tolist())
    return np.array(seen, dtype=np.int64) if seen else _NO_POSITIONS


def learned_proposals(
    retriever: TwoTowerRetriever,
    user: UserState | None,
    context_item_ids: Sequence[str],
    user_key: StateKey | None = None,
) -> UserProposals:
    """What the bundle proposes for this user (and page): the learned search and the transitions' list, for
    `two_tower` and `transitions`; remembered per user state under ``user_key`` (`TwoTowerRetriever.proposals`)."""
    recent = user.recent if user is not None else ()
    return retriever.proposals(
        recent, context_item_ids, user_key, TWO_TOWER_CANDIDATES, TRANSITION_CANDIDATES
    )


def two_tower(
    retriever: TwoTowerRetriever,
    proposals: UserProposals,
    user: UserState | None,
    context_item_ids: Sequence[str],
    blocked: Ints,
    index: ItemIndex,
    pool: CandidateSet,
    limit: int = TWO_TOWER_CANDIDATES,
) -> None:
    """The learned "what next": the user tower over the user's latest interactions (and the page being
    viewed), then the ``limit`` nearest items in the bundle's index (``proposals``, see `learned_proposals`),
    reason ``learned``.

    Scores are `TwoTowerRetriever.relative_scores`: each item's softmax probability relative to the best
    one's, so the best learned item scores 1 and the others fall off as the model's confidence does; the
    ranker also gets the log of it (``learned_logit``). Nothing is added when no interaction is known to the
    bundle (a new user on no page). ``blocked``: positions never proposed (`blocked_positions`).
    """
    if not len(proposals.labels):
        return
    recent = user.recent if user is not None else ()
    positions, raw = retriever.learned_positions(proposals, limit, index, blocked, recent, context_item_ids)
    if not len(positions):
        return
    logits = retriever.log_relative(raw)
    pool.add(LEARNED, positions, np.exp(logits), _no_args(len(positions)))
    pool.add_extra("learned_logit", positions, np.maximum(logits + LOGIT_FLOOR, 1e-6))


def transitions(
    retriever: TwoTowerRetriever, proposals: UserProposals, index: ItemIndex, pool: CandidateSet
) -> None:
    """What tends to come next after the user's latest items (and the page being viewed), from the bundle's item
    transitions (`server.retrieval.transitions`, computed into ``proposals``); scores relative to the request's
    best, reason argument the newest seed (0)."""
    found, scores = proposals.next_items, proposals.next_scores
    if not len(found):
        return
    positions = retriever.transition_positions(index)[found]
    best = float(scores[0]) or 1.0
    pool.add(TRANSITIONS, positions, scores.astype(np.float64) / best, np.zeros(len(found), dtype=np.int64))


def item_knn(
    retriever: TwoTowerRetriever,
    proposals: UserProposals,
    index: ItemIndex,
    pool: CandidateSet,
) -> None:
    """What the customers of the user's items also chose, over their whole histories (the bundle's ``item_knn.npz``,
    `trainer.models.item_knn`; computed into ``proposals``, `proposals.KNN_CANDIDATES` of them), scores relative to the
    request's best, no reason argument (the whole history is the reason)."""
    found, scores = proposals.knn_items, proposals.knn_scores
    if not len(found):
        return
    positions = retriever.knn_positions(index)[found]
    best = float(scores[0]) or 1.0
    pool.add(ITEM_KNN, positions, scores.astype(np.float64) / best, _no_args(len(found)))


_NO_POSITIONS = np.zeros(0, dtype=np.int64)
#: Reason arguments of a source that has none (-1), shared read-only (`CandidateSet` only reads them).
_MINUS_ONES = np.full(1024, -1, dtype=np.int64)
_MINUS_ONES.flags.writeable = False


def _no_args(n: int) -> Ints:
    """``n`` reason arguments -1."""
    return _MINUS_ONES[:n] if n <= len(_MINUS_ONES) else np.full(n, -1, dtype=np.int64)


#: `learned_logit` is the log relative probability plus this (items more than e**-20 below the best are at 0).
LOGIT_FLOOR = 20.0


@njit("Tuple((f8[:], i8[:]))(i8[:], f8[:], i8[:], f8[:], i8[:], f8[:])", cache=True, nogil=True)
def _covisitation_scores(
    pos: Ints, counts: Floats, lengths: Ints, factors: Floats, numbers: Ints, popularity_at: Floats
) -> tuple[Floats, Ints]:  # pragma: no cover - compiled
    """`covisitation`'s scores over the seeds' neighbours laid end to end (``lengths`` per seed, each seed's
    ``factor`` and number), divided by the best; empty when no score is positive."""
    m = len(pos)
    score = np.empty(m)
    arg = np.empty(m, dtype=np.int64)
    at = 0
    best = 0.0
    for s in range(len(lengths)):
        for _ in range(lengths[s]):
            p = pos[at]
            popularity = popularity_at[p] if p >= 0 else 0.0
            value = factors[s] * counts[at]
            value *= max(popularity, COVIS_POPULARITY_FLOOR) ** -COVIS_POPULARITY_EXPONENT
            score[at] = value
            arg[at] = numbers[s]
            best = max(best, value)
            at += 1
    if not best > 0.0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return score / best, arg


@njit(
    "Tuple((i8[:], f8[:], i8[:]))(i8[:], f8[:], i8[:], i8[:], i8[:], i8[:], i8[:], i8, i8, b1, f8[:], i8[:])",
    cache=True,
    nogil=True,
)
def _group_proposals(
    seed_pos: Ints,
    seed_weight: Floats,
    seed_number: Ints,
    group_at: Ints,
    starts: Ints,
    ends: Ints,
    members: Ints,
    take: int,
    keep: int,
    by_popularity: bool,
    popularity_at: Floats,
    brand_at: Ints,
) -> tuple[Ints, Floats, Ints]:  # pragma: no cover - compiled
    """(positions, scores times the seed's weight, the seed's number) that each seed proposes from its group's
    list (``members[starts[g]:ends[g]]``, ``g = group_at[seed]``): the first ``take`` items of it but the seed,
    at most ``keep``. Scored ``(popularity / the list's best) ** BRAND_POPULARITY_EXPONENT`` when
    ``by_popularity`` (`brand`), else ``1 / (1 + rank / 10)``, halved for another brand than the seed's
    (`content`)."""
    total = 0
    for s in range(len(seed_pos)):
        g = group_at[seed_pos[s]]
        total += min(ends[g] - starts[g], take)
    positions = np.empty(total, dtype=np.int64)
    scores = np.empty(total)
    args = np.empty(total, dtype=np.int64)
    at = 0
    for s in range(len(seed_pos)):
        p = seed_pos[s]
        g = group_at[p]
        start, end = starts[g], min(ends[g], starts[g] + take)
        if end <= start:
            continue
        best = popularity_at[members[start]]
        if best == 0.0:
            best = 1.0
        kept = 0
        for i in range(start, end):
            item = members[i]
            if item == p:
                continue
            if by_popularity:
                score = (popularity_at[item] / best) ** BRAND_POPULARITY_EXPONENT
            else:
                same_brand = brand_at[item] == brand_at[p] and brand_at[p] >= 0
                score = 1.0 / (1.0 + (i - start) / 10.0) * (1.0 if same_brand else 0.5)
            positions[at] = item
            scores[at] = score * seed_weight[s]
            args[at] = seed_number[s]
            at += 1
            kept += 1
            if kept >= keep:
                break
    return positions[:at], scores[:at], args[:at]


@njit("Tuple((i8[:], f8[:], i8[:]))(i8[:], f8[:], i8[:], i8[:], i8[:], i8, f8[:])", cache=True, nogil=True)
def _trending_proposals(
    categories: Ints,
    shares: Floats,
    starts: Ints,
    ends: Ints,
    members: Ints,
    per_category: int,
    trending_at: Floats,
) -> tuple[Ints, Floats, Ints]:  # pragma: no cover - compiled
    """(positions, scores, the category's number) of the first ``per_category`` items of each category's
    trending list (``members[starts[c]:ends[c]]``; none for a category numbered -1, outside the index), scored
    ``share * trend / the list's best trend``."""
    total = 0
    for j in range(len(categories)):
        c = categories[j]
        if c >= 0:
            total += min(ends[c] - starts[c], per_category)
    positions = np.empty(total, dtype=np.int64)
    scores = np.empty(total)
    args = np.empty(total, dtype=np.int64)
    at = 0
    for j in range(len(categories)):
        c = categories[j]
        if c < 0 or ends[c] <= starts[c]:
            continue
        best = trending_at[members[starts[c]]]
        if best == 0.0:
            best = 1.0
        for i in range(starts[c], min(ends[c], starts[c] + per_category)):
            positions[at] = members[i]
            scores[at] = shares[j] * trending_at[members[i]] / best
            args[at] = c
            at += 1
    return positions, scores, args
