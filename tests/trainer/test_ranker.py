"""The re-ranker's second stage: lists made by the serving path without leakage, a listwise fit, the ONNX export
and the `trainer train` bundle that carries it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_worker.fold import acted_items
from protos.aisle.v1 import catalog_pb2, events_pb2
from server.ranking.features import FEATURES
from server.ranking.ranker import Ranker
from server.retrieval import bundles
from server.retrieval.two_tower import TwoTowerRetriever
from trainer.data.dataset import Dataset
from trainer.evaluation.protocols import new_item
from trainer.preparation import training_split
from trainer.ranker_data import RankerLists, build_lists, list_metrics
from trainer.ranker_stage import split_by_user

torch = pytest.importorskip("torch")

from tests.trainer.test_train import chain_shop
from trainer.models.ranker import (
    LINEAR_KIND,
    MLP_KIND,
    FittedRanker,
    RankerError,
    RankerParams,
    add_importance,
    export_ranker,
    fit_linear_mean,
    fit_ranker,
    ranker_meta,
)

FRESH = 40  # items z0.. that only the mutated data set uses


def with_fresh_items(dataset: Dataset) -> dict[str, catalog_pb2.Item]:
    items = dict(dataset.items)
    for k in range(FRESH):
        items[f"z{k}"] = catalog_pb2.Item(item_id=f"z{k}", category="c9/l9", brand="b9", in_stock=True)
    return items


def mutate_after_validation_targets(dataset: Dataset) -> Dataset:
    """Every event after each user's validation target changed: the next new item becomes a fresh one, the
    others become clicks. The validation targets and everything before them stay as they were."""
    events = list(dataset.events)
    by_user: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        by_user.setdefault(e.user_id, []).append(i)
    fresh = iter(range(FRESH))
    for indices in by_user.values():
        seen: dict[str, None] = {}
        targets = []
        for i in indices:
            if new_item(events[i], seen) is not None:
                targets.append(i)
            for acted in acted_items(events[i]):
                seen.setdefault(acted, None)
        if len(targets) < 3:
            continue
        for i in indices:
            if i <= targets[-2]:
                continue
            changed = events_pb2.Event()
            changed.CopyFrom(events[i])
            if i == targets[-1]:
                changed.item_id = f"z{next(fresh)}"
            else:
                changed.type = events_pb2.CLICK
            events[i] = changed
    return Dataset(dataset.name, with_fresh_items(dataset), events)


def test_no_feature_reads_the_target_or_anything_after_it() -> None:
    dataset = chain_shop(users=30)
    dataset = Dataset(dataset.name, with_fresh_items(dataset), dataset.events)
    mutated = mutate_after_validation_targets(dataset)
    assert mutated.events != dataset.events  # the control: the data did change after the targets
    split, split_mutated = training_split(dataset, "loo"), training_split(mutated, "loo")
    assert split.cases == split_mutated.cases
    before = build_lists(list(dataset.items.values()), split.train, split.cases, None, progress=False)
    after = build_lists(
        list(mutated.items.values()), split_mutated.train, split_mutated.cases, None, progress=False
    )
    assert len(before) > 10
    np.testing.assert_array_equal(before.features, after.features)
    np.testing.assert_array_equal(before.target, after.target)
    # ... and the lists do see their events: folding the targets too changes the matrices.
    leaky = build_lists(list(dataset.items.values()), dataset.events, split.cases, None, progress=False)
    assert leaky.features.shape != before.features.shape or not np.array_equal(
        leaky.features, before.features
    )


@pytest.fixture(scope="module")
def lists_and_ranker() -> tuple[RankerLists, RankerLists, FittedRanker]:
    dataset = chain_shop(users=200)
    split = training_split(dataset, "loo")
    lists = build_lists(list(dataset.items.values()), split.train, split.cases, None, progress=False)
    train, valid = split_by_user(lists, share=0.3)
    fitted = fit_ranker(train, valid, list(FEATURES), RankerParams(epochs=15, seed=0), log=lambda _: None)
    add_importance(fitted, valid)
    return train, valid, fitted


def test_the_ranker_learns_what_comes_next(
    lists_and_ranker: tuple[RankerLists, RankerLists, FittedRanker],
) -> None:
    _, valid, fitted = lists_and_ranker
    ranked = list_metrics(valid, fitted.scores(valid.features))
    assert ranked["HR@10"] >= fitted.metrics["blend_valid"]["HR@10"] - 1e-9
    assert ranked["NDCG@10"] > 0.5  # i -> i + 1 is easy to learn from co-visitation and recency
    meta = fitted.metrics
    assert set(meta["importance"]) == set(FEATURES) and meta["best_epoch"] >= 1


def test_the_onnx_ranker_matches_pytorch_and_loads_in_the_server(
    lists_and_ranker: tuple[RankerLists, RankerLists, FittedRanker], tmp_path: Path
) -> None:
    _, valid, fitted = lists_and_ranker
    path = tmp_path / bundles.RANKER
    parity = export_ranker(fitted, path, valid.features)
    assert parity <= 1e-4
    meta = ranker_meta(fitted, parity)
    json.dumps(meta)  # meta.json must be able to hold it
    served = Ranker(path, meta)
    np.testing.assert_allclose(
        served.score(valid.features),
        fitted.scores(valid.features),
        atol=1e-4,
    )


@pytest.mark.parametrize("hidden", [(), (8,), (16, 8)])
def test_the_written_graph_is_the_module_without_its_elementwise_nodes(
    hidden: tuple[int, ...], tmp_path: Path
) -> None:
    """The graph is written from the weights (standardisation folded in), for any depth; it scores as the
    module does, on rows far from the training mean too."""
    import onnx

    from trainer.models.ranker import _module

    rng = np.random.default_rng(7)
    n = 12
    mean, scale = rng.normal(0, 5, n).astype(np.float32), rng.uniform(0.1, 10, n).astype(np.float32)
    torch.manual_seed(3)
    params = RankerParams(hidden=hidden)
    fitted = FittedRanker(_module(n, params, mean, scale), [f"f{i}" for i in range(n)], params, {})
    rows = (rng.normal(0, 3, (300, n)) * scale + mean).astype(np.float32)
    path = tmp_path / bundles.RANKER
    assert export_ranker(fitted, path, rows) <= 1e-4
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Gemm") == len(hidden) + 2 and ops.count("Relu") == len(hidden)
    assert not {"Sub", "Div", "Add"} & set(ops)


def test_the_written_ranker_has_no_subnormal_weights(tmp_path: Path) -> None:
    """Weights that training leaves below float32's normal range (a feature constant in its data) are written as
    zeros: they change no score, and each costs a microcode assist per use on Intel CPUs."""
    import onnx
    from onnx import numpy_helper

    from trainer.models.ranker import _module

    n = 12
    rng = np.random.default_rng(4)
    mean, scale = np.zeros(n, dtype=np.float32), np.ones(n, dtype=np.float32)
    torch.manual_seed(3)
    params = RankerParams(hidden=(8,))
    module = _module(n, params, mean, scale)
    first, linear = module.get_submodule("net.0"), module.get_submodule("linear")
    assert isinstance(first, torch.nn.Linear) and isinstance(linear, torch.nn.Linear)
    with torch.no_grad():
        first.weight[:, 5] = 3e-39  # the column of a feature that was always zero
        linear.weight[0, 5] = -2e-39
    fitted = FittedRanker(module, [f"f{i}" for i in range(n)], params, {})
    path = tmp_path / bundles.RANKER
    assert export_ranker(fitted, path, rng.normal(0, 1, (50, n)).astype(np.float32)) <= 1e-4
    tiny = np.finfo(np.float32).tiny
    for initializer in onnx.load(str(path)).graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32:
            assert not np.any((values != 0) & (np.abs(values) < tiny)), initializer.name


def test_the_linear_mean_scores_the_mean_of_its_seeds(
    lists_and_ranker: tuple[RankerLists, RankerLists, FittedRanker], tmp_path: Path
) -> None:
    """Averaging the weights of linear rankers averages their scores: the ensemble is one model when served."""
    train, valid, _ = lists_and_ranker
    params = RankerParams(epochs=3, seed=4)
    mean = fit_linear_mean(train, valid, list(FEATURES), params, log=lambda _: None, seeds=3)
    seeded = [
        fit_ranker(
            train, valid, list(FEATURES), RankerParams(epochs=3, seed=4 + s, hidden=()), log=lambda _: None
        )
        for s in range(3)
    ]
    rows = valid.features.astype(np.float32)
    expected = np.mean([fit.scores(rows) for fit in seeded], axis=0)
    np.testing.assert_allclose(mean.scores(rows), expected, rtol=1e-5, atol=1e-5)
    assert mean.kind == LINEAR_KIND and mean.params.hidden == ()
    meta = ranker_meta(mean, export_ranker(mean, tmp_path / bundles.RANKER, rows))
    assert meta["kind"] == LINEAR_KIND and meta["seeds"] == 3 and len(meta["seed_valid_ndcg10"]) == 3
    assert Ranker(tmp_path / bundles.RANKER, meta).score(rows).shape == (len(rows),)


def test_too_few_lists_is_a_ranker_error(
    lists_and_ranker: tuple[RankerLists, RankerLists, FittedRanker],
) -> None:
    train, valid, _ = lists_and_ranker
    with pytest.raises(RankerError):
        fit_ranker(train.subset(np.arange(3)), valid, list(FEATURES), log=lambda _: None)


def test_train_writes_both_stages_into_one_bundle(tmp_path: Path) -> None:
    from trainer.__main__ import main
    from trainer.generate import generate_shop

    shop = tmp_path / "shop"
    generate_shop(400, 150, 2, shop, progress=False)
    out = tmp_path / "bundles"
    argv = [
        "train", "--data", str(shop), "--format", "generated", "--protocol", "none", "--out", str(out),
        "--version", "r1", "--epochs", "2", "--dim", "16", "--max-len", "10", "--ranker-epochs", "3",
        "--negatives", "64", "--no-progress", "--threads", "1", "--item-knn",
    ]  # fmt: skip
    assert main(argv) == 0
    paths = bundles.bundle(out, "r1")
    assert paths.ranker.is_file()
    meta = json.loads(paths.meta.read_text())
    ranker = meta["ranker"]
    assert ranker["features"] == list(FEATURES) and ranker["onnx_parity"] <= 1e-4
    assert {"valid", "blend_valid", "importance", "recall"} <= set(ranker)
    # Both shapes were tried on the validation lists, and the better one is the bundle's.
    shapes = ranker["shapes_valid"]
    assert set(shapes) == {MLP_KIND, LINEAR_KIND}
    assert ranker["valid"] == max(shapes.values(), key=lambda metrics: metrics["NDCG@10"])
    if ranker["kind"] == MLP_KIND:  # a tie keeps the MLP
        assert shapes[MLP_KIND]["NDCG@10"] >= shapes[LINEAR_KIND]["NDCG@10"]
    assert paths.transitions.is_file() and meta["transitions"]["refitted_on"] == "learnable events"
    served = TwoTowerRetriever.load(paths)
    assert served.ranker is not None and served.ranker.features == list(FEATURES)
    assert served.transitions is not None
    assert paths.item_knn.is_file() and meta["item_knn"]["refitted_on"] == "learnable events"
    assert served.item_knn is not None
    # --no-ranker: the first stage alone, served with the blend.
    assert main([a if a != "r1" else "r2" for a in argv] + ["--no-ranker"]) == 0
    assert (
        not bundles.bundle(out, "r2").ranker.is_file() and not bundles.bundle(out, "r2").transitions.is_file()
    )
    assert not bundles.bundle(out, "r2").item_knn.is_file()
    assert TwoTowerRetriever.load(bundles.bundle(out, "r2")).ranker is None


def test_lists_hold_only_rows_the_rules_allow_and_one_target_each() -> None:
    dataset = chain_shop(users=40)
    split = training_split(dataset, "loo")
    lists = build_lists(list(dataset.items.values()), split.train, split.cases, None, progress=False)
    sizes = np.diff(lists.offsets)
    assert (sizes > 0).all() and (lists.target < sizes).all()
    assert lists.features.shape == (int(sizes.sum()), len(FEATURES))
    assert 0 < lists.recall <= 1.0 and lists.cases == len(split.cases)


def test_the_served_transitions_learn_everything_the_protocol_allows() -> None:
    from trainer.evaluation.protocols import leave_one_out
    from trainer.ranker_stage import learnable_events

    dataset = chain_shop(users=30)
    test_train = leave_one_out(dataset, "test").train
    assert learnable_events(dataset, "loo") == test_train  # never a test target, validation items included
    assert len(test_train) < len(dataset.events)
    assert learnable_events(dataset, "none") == dataset.events
    assert learnable_events(dataset, "loo", strict=True) == dataset.events  # the training part, all of it


def test_strict_training_is_for_loo_only(tmp_path: Path) -> None:
    from trainer.__main__ import main
    from trainer.generate import generate_shop

    shop = tmp_path / "shop"
    generate_shop(50, 30, 3, shop, progress=False)
    argv = ["train", "--data", str(shop), "--format", "generated", "--protocol", "time-split", "--strict",
            "--out", str(tmp_path / "b"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
