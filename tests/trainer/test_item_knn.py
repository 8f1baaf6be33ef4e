"""Whole-history item neighbours: the cosine of the item columns, the strongest kept, served by the server's reader
of neighbour lists, and a candidate source with its reason."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from loadtest.harness.bundles import write_bundle
from protos.aisle.v1 import events_pb2
from server.retrieval.bundles import ITEM_KNN
from server.retrieval.transitions import ItemTransitions
from server.retrieval.two_tower import TwoTowerRetriever
from tests.server.test_transitions import recent_of, reversed_catalog
from tests.trainer.test_transitions import events_of
from trainer.models.item_knn import KnnParams, fit


def test_neighbours_are_the_cosine_of_the_item_columns() -> None:
    # a and b share both their users; c shares one of its two users with a and with b; d is alone with c.
    model = fit(events_of({"u1": ["a", "b"], "u2": ["a", "b", "c"], "u3": ["c", "d"]}))
    index = {item: i for i, item in enumerate(model.item_ids)}
    dense = model.neighbours.toarray()

    def cosine(x: str, y: str) -> float:
        return float(dense[index[x], index[y]])

    assert cosine("a", "b") == pytest.approx(1.0)  # 2 / sqrt(2 * 2)
    assert cosine("a", "c") == pytest.approx(0.5)  # 1 / sqrt(2 * 2)
    assert cosine("c", "d") == pytest.approx(1 / math.sqrt(2))  # 1 / sqrt(2 * 1)
    assert cosine("a", "d") == 0.0 and np.all(np.diag(dense) == 0.0)
    np.testing.assert_allclose(dense, dense.T)


def test_a_whole_history_counts_not_only_its_order() -> None:
    # Days apart, in either order: the same users make the same neighbours.
    one = fit(events_of({"u1": ["a", "b"], "u2": ["b", "a"]}))
    index = {item: i for i, item in enumerate(one.item_ids)}
    assert one.neighbours[index["a"], index["b"]] == pytest.approx(1.0)
    assert one.neighbours[index["b"], index["a"]] == pytest.approx(1.0)


def test_only_the_strongest_neighbours_are_kept_ties_by_column() -> None:
    rng = random.Random(3)
    items = [f"i{i}" for i in range(40)]
    sequences = {f"u{u}": rng.sample(items, rng.randint(2, 15)) for u in range(200)}
    full = fit(events_of(sequences), KnnParams(neighbours=1_000)).neighbours.toarray()
    kept = fit(events_of(sequences), KnnParams(neighbours=5))
    for row in range(len(kept.item_ids)):
        start, end = kept.neighbours.indptr[row], kept.neighbours.indptr[row + 1]
        cols, vals = kept.neighbours.indices[start:end], kept.neighbours.data[start:end]
        expected = np.lexsort((np.arange(full.shape[1]), -full[row]))[: min(5, int((full[row] > 0).sum()))]
        assert sorted(cols.tolist()) == sorted(expected.tolist())
        np.testing.assert_allclose(vals, full[row, cols])


def test_events_that_act_on_no_item_or_are_not_interactions_are_ignored() -> None:
    events = events_of({"u1": ["a", "b"]})
    search = events_pb2.Event(event_id="s", user_id="u1", type=events_pb2.SEARCH, ts_ms=5, query="x")
    removal = events_pb2.Event(
        event_id="r", user_id="u1", type=events_pb2.REMOVE_FROM_CART, ts_ms=6, item_id="z"
    )
    model = fit([*events, search, removal])
    assert sorted(model.item_ids) == ["a", "b"]


def test_the_file_is_served_by_the_neighbour_list_reader(tmp_path: Path) -> None:
    rng = random.Random(5)
    items = [f"i{i}" for i in range(50)]
    sequences = {f"u{u}": rng.sample(items, rng.randint(2, 10)) for u in range(300)}
    params = KnnParams(neighbours=20, window=8, decay=4.0)
    model = fit(events_of(sequences), params)
    model.save(tmp_path / ITEM_KNN)
    served = ItemTransitions.load(tmp_path / ITEM_KNN)
    assert served.item_ids == model.item_ids and served.window == 8 and served.decay == 4.0
    dense = model.neighbours.toarray()
    index = {item: i for i, item in enumerate(model.item_ids)}
    for _ in range(30):
        history = rng.sample(items, rng.randint(1, 12))
        inputs = [index[i] for i in reversed(history)][:8]  # newest first
        expected = sum(math.exp(-k / 4.0) * dense[i] for k, i in enumerate(inputs))
        np.testing.assert_allclose(served.scores(recent_of(history)), expected, rtol=1e-5, atol=1e-6)


def test_the_bundles_neighbours_join_the_candidates_with_their_reason(tmp_path: Path) -> None:
    from feature_worker.state import UserState
    from server.recommender import Recommender
    from server.retrieval import sources
    from server.retrieval.candidates import ITEM_KNN as SOURCE
    from server.retrieval.candidates import CandidateSet
    from server.retrieval.proposals import KNN_CANDIDATES

    rng = random.Random(9)
    items = [f"i{i}" for i in range(60)]
    model = fit(events_of({f"u{u}": rng.sample(items, rng.randint(2, 12)) for u in range(300)}))
    ids = model.item_ids
    paths = write_bundle(tmp_path, "v1", ids, np.eye(len(ids), dtype=np.float32))
    retriever = TwoTowerRetriever.load(paths)
    assert retriever.item_knn is None  # optional: a bundle without the file serves without the source
    model.save(paths.item_knn)
    retriever = TwoTowerRetriever.load(paths)
    catalog, index = reversed_catalog(ids)
    user = UserState(recent=recent_of(ids[:4]))
    pool = CandidateSet()
    sources.item_knn(retriever, sources.learned_proposals(retriever, user, ()), index, pool)
    pool.finish()
    assert retriever.item_knn is not None
    found, _ = retriever.item_knn.top(user.recent, (), KNN_CANDIDATES)
    proposed = dict(zip(index.names(pool.positions), pool.scores[SOURCE].tolist()))
    assert set(proposed) == {ids[i] for i in found.tolist()}
    assert proposed[ids[int(found[0])]] == 1.0 and all(0.0 < s <= 1.0 for s in proposed.values())
    # Served: an answered item the neighbours alone proposed says so.
    recommender = Recommender(catalog)
    from feature_worker.stores.base import RequestFeatures
    from server.recommender import Query

    answer = recommender.recommend(
        Query(user_id="u", k=60, explain=True), RequestFeatures(user=user, covis={}), retriever
    )
    reasons = {r.item_id: r.reasons for r in answer}
    assert any("customers_also_liked" in reasons.get(ids[i], []) for i in found.tolist())
