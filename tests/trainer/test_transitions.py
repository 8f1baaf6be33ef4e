"""The item-transition model: known answers on tiny chains, the vocabulary cap, save/load, and its evaluation row."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset
from trainer.evaluate import evaluate
from trainer.models.transitions import (
    TransitionModel,
    TransitionParams,
    fit,
    fit_and_save,
    input_weights,
    vocabulary,
)

START_MS = 1_767_225_600_000
MINUTE = 60_000


def events_of(
    sequences: dict[str, list[str]], etype: events_pb2.EventType.ValueType = events_pb2.PURCHASE
) -> list[events_pb2.Event]:
    """One event per item, users in parallel, a minute apart, in time order."""
    out = [
        events_pb2.Event(
            event_id=f"{user}-{p}", type=etype, user_id=user, item_id=item, ts_ms=START_MS + p * MINUTE
        )
        for user, items in sequences.items()
        for p, item in enumerate(items)
    ]
    return sorted(out, key=lambda e: e.ts_ms)


def chains(users: int = 30) -> dict[str, list[str]]:
    """Every user walks a -> b -> c, or x -> y -> z: what follows is always known."""
    return {f"u{u}": (["a", "b", "c"] if u % 2 else ["x", "y", "z"]) for u in range(users)}


def test_the_next_item_of_a_chain_comes_first() -> None:
    model = fit(events_of(chains()))
    scores = model.scores([["a"], ["a", "b"], ["x"], ["x", "y"]])
    index = model.index
    top = [model.item_ids[int(i)] for i in np.argmax(scores, axis=1)]
    assert top == ["b", "c", "y", "z"]
    # The other chain gets nothing from a's row: no user ever crossed.
    assert scores[0, index["y"]] <= 0 and scores[0, index["z"]] <= 0
    # The diagonal is zero: an item never explains itself.
    assert model.neighbours.diagonal().tolist() == [0.0] * len(model.item_ids)


def test_recency_weights_favour_the_newest_input() -> None:
    # After "a" then "x" the newest ("x") decides: "y" beats "b".
    model = fit(events_of(chains()))
    scores = model.scores([["a", "x"]])[0]
    assert scores[model.index["y"]] > scores[model.index["b"]] > 0
    w = input_weights(3, 2.0)
    assert w[0] == 1.0 and w[1] == pytest.approx(np.exp(-0.5)) and w[2] == pytest.approx(np.exp(-1.0))


def test_vocabulary_keeps_the_most_frequent_items() -> None:
    sequences = {**chains(), "rare": ["q", "a"]}
    events = events_of(sequences)
    assert vocabulary(events, 3) == ["a", "b", "c"]  # 16 each, then x y z with 15; ties by id
    model = fit(events, TransitionParams(max_items=3))
    assert model.item_ids == ["a", "b", "c"]
    assert model.neighbours.shape == (3, 3)
    # Items outside the vocabulary are dropped from the inputs, not counted as positions.
    top = model.scores([["a", "x", "q"]])[0]
    assert model.item_ids[int(np.argmax(top))] == "b"


def test_neighbours_per_item_are_capped() -> None:
    rng = random.Random(3)
    items = [f"i{i}" for i in range(40)]
    sequences = {f"u{u}": rng.sample(items, 8) for u in range(200)}
    model = fit(events_of(sequences), TransitionParams(neighbours=5))
    per_row = np.diff(model.neighbours.indptr)
    assert per_row.max() == 5 and (model.neighbours.data > 0).all()


def test_save_and_load_keep_the_scores(tmp_path: Path) -> None:
    rng = random.Random(1)
    items = [f"i{i}" for i in range(30)]
    sequences = {f"u{u}": rng.sample(items, 6) for u in range(120)}
    model = fit(events_of(sequences), TransitionParams(reg=5.0, decay=3.0))
    path = tmp_path / "transitions.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert set(npz.files) >= {"item_ids", "indptr", "indices", "data", "params"}
    again = TransitionModel.load(path)
    assert again.item_ids == model.item_ids and again.params == model.params
    probe = [list(seq[:3]) for seq in sequences.values()][:20]
    np.testing.assert_array_equal(again.scores(probe), model.scores(probe))


def test_a_refit_is_the_same() -> None:
    events = events_of(chains())
    first, second = fit(events), fit(events)
    # scipy-stubs declare no `!=` for sparse matrices, so mypy takes object's (a bool); it is elementwise.
    assert (first.neighbours != second.neighbours).nnz == 0  # type: ignore[attr-defined]


def test_fit_and_save_learns_the_training_part(tmp_path: Path) -> None:
    sequences = {f"u{u}": (["a", "b", "c", "d"] if u % 2 else ["w", "x", "y", "z"]) for u in range(40)}
    items = {i: catalog_pb2.Item(item_id=i, in_stock=True) for i in "abcdwxyz"}
    dataset = Dataset("chains", items, events_of(sequences))
    model = fit_and_save(dataset, "loo", tmp_path / "t.npz")
    assert TransitionModel.load(tmp_path / "t.npz").item_ids == model.item_ids
    # loo's training part drops each user's validation and test items (c and d): only a -> b and w -> x are
    # left, so the model knows nothing of c or d.
    assert sorted(model.item_ids) == ["a", "b", "w", "x"]
    scores = model.scores([["a"], ["w"]])
    assert [model.item_ids[int(i)] for i in np.argmax(scores, axis=1)] == ["b", "x"]


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        TransitionParams(reg=0.0)
    with pytest.raises(ValueError):
        TransitionParams(alpha=1.0)
    with pytest.raises(ValueError):
        TransitionParams(window=0)


def test_evaluation_rows_find_the_next_item_of_a_chain() -> None:
    # Short walkers stop at d (loo: validation target c, test target d); long ones go on to f (targets e, f).
    # Only the long walkers show c -> d before a test target, and nobody ever shows e -> f: the short walkers'
    # targets are found first, the long walkers' never.
    sequences = {f"u{u}": list("abcd") if u % 2 else list("abcdef") for u in range(40)}
    items = {i: catalog_pb2.Item(item_id=i, in_stock=True) for i in "abcdef"}
    dataset = Dataset("chains", items, events_of(sequences))
    for split in ("valid", "test"):
        rows = dict(
            evaluate(dataset, "loo", split, ["transitions", "transitions:train-only"], progress=False)
        )
        for name, [result] in rows.items():
            assert result.cases == 40, (split, name)
            assert result.metrics["HR@10"] == 0.5 and result.metrics["NDCG@10"] == 0.5, (split, name)
