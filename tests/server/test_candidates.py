"""The candidate matrix: one row per proposed item, each source's summed score, rank and reason argument."""

from __future__ import annotations

import numpy as np

from server.retrieval.candidates import ABSENT_RANK, BRAND, COVISITATION, LEARNED, SOURCES, CandidateSet


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_sources_become_columns_summed_ranked_and_explained() -> None:
    pool = CandidateSet()
    # Co-visitation proposes 7 from two seeds (0.2 from seed 0, 0.5 from seed 1) and 3 from seed 0.
    pool.add(COVISITATION, ints(7, 3, 7), floats(0.2, 0.6, 0.5), ints(0, 0, 1))
    pool.add(BRAND, ints(3, 9), floats(1.0, 1.0), ints(2, 2))
    pool.add(
        LEARNED, ints(-1, 9, 4), floats(1.0, 0.0, 0.3), ints(-1, -1, -1)
    )  # -1: not in the index; 0: dropped
    pool.add_extra("covis_latest", ints(7, 3, 11), floats(0.2, 0.6, 9.0))  # 11 is no candidate: ignored
    pool.finish()
    assert pool.positions.tolist() == [3, 4, 7, 9]
    assert pool.scores.shape == (len(SOURCES), 4)
    np.testing.assert_allclose(pool.scores[COVISITATION], [0.6, 0.0, 0.7, 0.0])
    np.testing.assert_allclose(pool.scores[BRAND], [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(pool.scores[LEARNED], [0.0, 0.3, 0.0, 0.0])
    assert pool.ranks[COVISITATION].tolist() == [1, ABSENT_RANK, 0, ABSENT_RANK]
    assert pool.ranks[BRAND].tolist() == [0, ABSENT_RANK, ABSENT_RANK, 1]  # a tie goes to the lower position
    assert pool.args[COVISITATION].tolist() == [0, -1, 1, -1]  # 7's largest share came from seed 1
    np.testing.assert_allclose(pool.extra_column("covis_latest"), [0.6, 0.0, 0.2, 0.0])
    np.testing.assert_allclose(pool.extra_column("missing"), [0.0] * 4)


def test_an_empty_pool_has_empty_columns() -> None:
    pool = CandidateSet()
    pool.add(BRAND, ints(), floats(), ints())
    pool.finish()
    assert len(pool) == 0 and pool.scores.shape == (len(SOURCES), 0)


def test_a_co_visitation_list_is_converted_once_per_list_object() -> None:
    from feature_worker.catalog import Catalog
    from server.retrieval.item_index import ItemIndex
    from tests.shop import item

    catalog = Catalog()
    catalog.upsert_many(item(i) for i in ("a", "b", "c"))
    index = ItemIndex(catalog)
    ranked = [("c", 3.0), ("gone", 2.0), ("a", 1.0)]
    positions, counts, total = index.neighbours("b", ranked)
    assert index.names(positions[positions >= 0]) == ["c", "a"] and positions[1] == -1
    assert counts.tolist() == [3.0, 2.0, 1.0] and total == 6.0
    assert index.neighbours("b", ranked)[0] is positions  # the same list: remembered
    # The store hands out a new list when the item's neighbours change: converted again.
    changed, _, total = index.neighbours("b", [("a", 5.0)])
    assert index.names(changed) == ["a"] and total == 5.0


def test_random_pools_match_the_plain_definition_of_the_columns() -> None:
    """Hundreds of proposals per source, with repeats and ties: rows, sums, ranks (score, ties by position)
    and arguments as plain Python defines them."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        pool = CandidateSet()
        proposed: dict[int, list[tuple[int, float, int]]] = {s: [] for s in range(len(SOURCES))}
        for source in range(len(SOURCES)):
            for _ in range(int(rng.integers(0, 3))):
                size = int(rng.integers(0, 150))
                positions = rng.integers(-1, 400, size)
                scores = rng.integers(0, 5, size) / 4.0  # few distinct values: ties and zeros are common
                args = rng.integers(-1, 5, size)
                pool.add(source, positions, scores, args)
                proposed[source] += zip(positions.tolist(), scores.tolist(), args.tolist())
        pool.finish()
        kept = {s: [(p, v, a) for p, v, a in found if p >= 0 and v > 0] for s, found in proposed.items()}
        rows = sorted({p for found in kept.values() for p, _, _ in found})
        assert pool.positions.tolist() == rows
        for source, found in kept.items():
            summed = {p: 0.0 for p in rows}
            best: dict[int, tuple[float, int]] = {}
            for p, v, a in found:
                summed[p] += v
                if p not in best or v >= best[p][0]:
                    best[p] = (v, a)
            ranked = sorted((p for p in rows if summed[p] > 0), key=lambda p: (-summed[p], p))
            rank = {p: r for r, p in enumerate(ranked)}
            np.testing.assert_allclose(pool.scores[source], [summed[p] for p in rows])
            assert pool.ranks[source].tolist() == [rank.get(p, ABSENT_RANK) for p in rows]
            assert pool.args[source].tolist() == [best[p][1] if p in best else -1 for p in rows]
