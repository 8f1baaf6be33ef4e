"""The server's item-transition scorer: same scores as the trainer, inputs read as the fold keeps them, and
an optional bundle file."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from feature_worker.catalog import Catalog
from feature_worker.fold import CLICK, PURCHASE, VIEW
from loadtest.harness.bundles import write_bundle
from server.retrieval.bundles import TRANSITIONS, BundleError
from server.retrieval.item_index import ItemIndex
from server.retrieval.transitions import ItemTransitions, load_optional
from server.retrieval.two_tower import TwoTowerRetriever
from tests.shop import item
from tests.trainer.test_transitions import chains, events_of
from trainer.models.transitions import TransitionModel, TransitionParams, fit


@pytest.fixture(scope="module")
def model() -> TransitionModel:
    rng = random.Random(7)
    items = [f"i{i}" for i in range(60)]
    sequences = {f"u{u}": rng.sample(items, rng.randint(2, 12)) for u in range(300)}
    return fit(events_of(sequences), TransitionParams(window=5, decay=1.5, neighbours=20))


def reversed_catalog(ids: list[str]) -> tuple[Catalog, ItemIndex]:
    """A catalog of ``ids`` in reverse order (its positions differ from a model's indices) and its index."""
    catalog = Catalog()
    catalog.upsert_many(item(i) for i in ids[::-1])
    return catalog, ItemIndex(catalog)


def recent_of(items: list[str], types: list[int] | None = None) -> list[tuple[int, int, str]]:
    """``UserState.recent`` for these items, oldest first, a minute apart."""
    types = types or [VIEW] * len(items)
    return [(1_000 + 60_000 * p, t, item) for p, (t, item) in enumerate(zip(types, items, strict=True))]


def test_server_scores_equal_the_trainers(model: TransitionModel, tmp_path: Path) -> None:
    path = tmp_path / TRANSITIONS
    model.save(path)
    served = ItemTransitions.load(path)
    assert served.item_ids == model.item_ids and served.window == 5 and served.decay == 1.5
    rng = random.Random(11)
    for _ in range(50):
        seq = rng.choices(model.item_ids, k=rng.randint(1, 9))  # repeats included
        expected = model.scores([seq])[0]
        np.testing.assert_allclose(served.scores(recent_of(seq)), expected, rtol=1e-5, atol=1e-6)
        # The top n are the best-scored items that are not inputs, best first.
        found, values = served.top(recent_of(seq), n=10)
        inputs = {model.index[i] for i in seq[-5:]}
        assert not inputs & set(found.tolist())
        masked = expected.copy()
        masked[list(inputs)] = 0.0
        assert len(found) == min(10, int((masked > 0).sum()))
        np.testing.assert_allclose(values, np.sort(masked)[::-1][: len(found)], rtol=1e-5, atol=1e-6)
        assert list(values) == sorted(values, reverse=True)


def test_context_items_are_the_newest_inputs(model: TransitionModel) -> None:
    served = ItemTransitions(
        model.item_ids,
        model.neighbours.indptr,
        model.neighbours.indices,
        model.neighbours.data,
        model.params.decay,
        model.params.window,
    )
    seq = model.item_ids[:3]
    context = model.item_ids[10:12]
    np.testing.assert_allclose(
        served.scores(recent_of(seq), context), model.scores([seq + context])[0], rtol=1e-5, atol=1e-6
    )
    rows, weights = served.inputs(recent_of(seq), context)
    assert rows.tolist() == [model.index[i] for i in reversed(seq + context)]
    assert weights[0] == 1.0 and weights[1] == pytest.approx(np.exp(-1 / 1.5))


def test_inputs_are_the_newest_known_items_whatever_their_type(model: TransitionModel) -> None:
    served = ItemTransitions(
        model.item_ids, model.neighbours.indptr, model.neighbours.indices, model.neighbours.data, 1.5, 3
    )
    seq = ["i1", "unknown", "i2", "i3", "nope", "i4"]
    rows, weights = served.inputs(recent_of(seq, [PURCHASE, VIEW, CLICK, VIEW, VIEW, PURCHASE]))
    assert [served.item_ids[r] for r in rows] == ["i4", "i3", "i2"]  # window 3, unknown ids skipped
    assert len(weights) == 3
    empty, none = served.top(recent_of(["unknown"]))
    assert len(empty) == 0 and len(none) == 0


def test_a_chain_is_followed_through_the_server(tmp_path: Path) -> None:
    trained = fit(events_of(chains()))
    trained.save(tmp_path / TRANSITIONS)
    served = ItemTransitions.load(tmp_path / TRANSITIONS)
    assert served.top_ids(recent_of(["a"]), n=1)[0][0] == "b"
    assert served.top_ids(recent_of(["x"]), ("a", "b"), n=1)[0][0] == "c"


def test_a_bundle_without_transitions_still_loads(tmp_path: Path, model: TransitionModel) -> None:
    vectors = np.eye(4, dtype=np.float32)
    paths = write_bundle(tmp_path, "v1", ["a", "b", "c", "d"], vectors)
    assert TwoTowerRetriever.load(paths).item_ids == ["a", "b", "c", "d"]
    assert load_optional(paths.transitions) is None and load_optional(paths.item_knn) is None
    model.save(paths.transitions)
    loaded = load_optional(paths.transitions)
    assert loaded is not None and loaded.item_ids == model.item_ids
    assert TwoTowerRetriever.load(paths).version == "v1"


def test_a_bad_file_is_a_bundle_error(tmp_path: Path, model: TransitionModel) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(BundleError):
        ItemTransitions.load(garbage)
    csr = model.neighbours
    np.savez(tmp_path / "partial.npz", indptr=csr.indptr)
    with pytest.raises(BundleError, match="missing"):
        ItemTransitions.load(tmp_path / "partial.npz")
    with pytest.raises(BundleError, match="outside"):
        ItemTransitions(model.item_ids, csr.indptr, csr.indices + len(model.item_ids), csr.data, 1.0, 5)
    with pytest.raises(BundleError, match="indptr"):
        ItemTransitions(model.item_ids[:-1], csr.indptr, csr.indices, csr.data, 1.0, 5)


def test_ties_go_to_the_lower_index() -> None:
    # Item 0 leads to 1..6 with equal weights: the first n of them, in index order.
    n_items = 7
    indptr = np.array([0, 6] + [6] * (n_items - 1))
    served = ItemTransitions(
        [f"t{i}" for i in range(n_items)], indptr, np.arange(1, 7), np.ones(6, np.float32), 1.0, 3
    )
    found, values = served.top(recent_of(["t0"]), n=4)
    assert found.tolist() == [1, 2, 3, 4] and values.tolist() == [1.0] * 4


def test_a_model_of_no_events_serves_nothing(tmp_path: Path) -> None:
    empty = fit([])
    assert empty.item_ids == []
    empty.save(tmp_path / TRANSITIONS)
    served = ItemTransitions.load(tmp_path / TRANSITIONS)
    found, values = served.top(recent_of(["a"]))
    assert len(found) == 0 and len(values) == 0


def test_the_bundles_transitions_join_the_candidates_as_a_source(
    model: TransitionModel, tmp_path: Path
) -> None:
    from feature_worker.state import UserState
    from server.retrieval import sources
    from server.retrieval.candidates import TRANSITIONS as SOURCE
    from server.retrieval.candidates import CandidateSet

    ids = model.item_ids
    paths = write_bundle(tmp_path, "v1", ids, np.eye(len(ids), dtype=np.float32))
    model.save(paths.transitions)
    retriever = TwoTowerRetriever.load(paths)
    _, index = reversed_catalog(ids)
    user = UserState(recent=recent_of(ids[:3]))
    pool = CandidateSet()
    sources.transitions(retriever, sources.learned_proposals(retriever, user, ()), index, pool)
    pool.finish()
    assert retriever.transitions is not None  # the bundle has the transition model saved above
    found, _ = retriever.transitions.top(user.recent, (), sources.TRANSITION_CANDIDATES)
    proposed = dict(zip(index.names(pool.positions), pool.scores[SOURCE].tolist()))
    assert set(proposed) == {ids[i] for i in found.tolist()}
    best = ids[int(found[0])]
    assert proposed[best] == 1.0 and all(0.0 < s <= 1.0 for s in proposed.values())
