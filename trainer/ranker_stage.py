"""The second stage of ``trainer train``: item transitions, whole-history item neighbours and the re-ranker, trained
on the serving path's own candidates.

Runs inside the bundle being written (`trainer.export.write_bundle`'s ``second_stage``), before the bundle is
renamed into place: it loads the just-exported towers exactly as the server does (`TwoTowerRetriever`), makes
the candidate lists of the protocol's training split through the server's `Recommender`
(``trainer.ranker_data``), splits them by user into training and validation lists, fits the ranker
(``trainer.models.ranker``: an MLP and a mean of linear rankers, the better on the validation lists kept),
exports it to ONNX (parity checked) and records features, importance and validation figures in ``meta.json``'s
``ranker``. A bundle whose ranker would rank the validation lists worse
than the blend does still gets it (the numbers say so in meta.json and the log): the choice is the operator's,
with `trainer evaluate` comparing both.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protos.aisle.v1 import events_pb2
from server.ranking.features import FEATURES
from server.retrieval.bundles import BundlePaths
from server.retrieval.two_tower import TwoTowerRetriever
from trainer.data.dataset import Dataset
from trainer.evaluation.protocols import StaticSplit, leave_one_out, time_split
from trainer.models.item_knn import fit as fit_item_knn
from trainer.models.ranker import (
    RankerParams,
    add_importance,
    export_ranker,
    fit_linear_mean,
    fit_ranker,
    ranker_meta,
)
from trainer.models.transitions import fit as fit_transitions
from trainer.preparation import training_split
from trainer.ranker_data import RankerLists, build_lists

Log = Callable[[str], None]
#: Share of users whose lists validate the ranker (early stopping, the figures in meta.json).
VALID_SHARE = 0.15
#: At most this many cases make lists (drawn by user with the run's seed when there are more): each list is a few
#: hundred rows, and 25,000 of them train a ranker in minutes on 2 cores whatever the shop's size.
MAX_CASES = 25_000


def split_by_user(lists: RankerLists, share: float = VALID_SHARE) -> tuple[RankerLists, RankerLists]:
    """(training, validation) lists, each user's list on one side by a hash of the user id (stable)."""
    valid = np.array(
        [
            int.from_bytes(hashlib.blake2b(u.encode(), digest_size=4).digest(), "little") / 2**32 < share
            for u in lists.users
        ],
        dtype=bool,
    )
    train_lists = lists.subset(np.flatnonzero(~valid))
    valid_lists = lists.subset(np.flatnonzero(valid))
    # Misses count in validation: scale the asked cases to the validation share of the kept lists.
    valid_lists.cases = max(len(valid_lists), round(lists.cases * len(valid_lists) / max(len(lists), 1)))
    return train_lists, valid_lists


def learnable_events(dataset: Dataset, protocol: str, strict: bool = False) -> list[events_pb2.Event]:
    """Everything a bundle for ``protocol`` may finally learn from, once the ranker has been fitted: for ``loo``
    every event before each user's test target (the validation interactions included, as a shop retraining
    daily would have them), for ``time-split`` every event before the test cut-off, for ``none`` (serving)
    every event. Under ``strict`` the data set is the training part already, all of which may be learned."""
    if strict or protocol == "none":
        return list(dataset.events)
    if protocol == "loo":
        return leave_one_out(dataset, "test").train
    if protocol == "time-split":
        return time_split(dataset, "test").train
    raise ValueError(f"unknown protocol {protocol!r}")


def second_stage(
    paths: BundlePaths,
    dataset: Dataset,
    protocol: str,
    strict: bool = False,
    params: RankerParams = RankerParams(),
    transitions: bool = True,
    log: Log = print,
    progress: bool = True,
    item_knn: bool = False,
) -> dict[str, Any]:
    """Item transitions and item neighbours, then the ranker, into the bundle at ``paths``; the ``meta.json``
    entries to add.

    The transitions and the neighbours are fitted on the protocol's training split first, so the ranker's lists
    see them exactly as they were without each case's target; once the ranker is fitted they are refitted on
    everything the bundle may learn from (`learnable_events`), so the served sources are as fresh as the data
    allows.
    """
    split = training_split(dataset, protocol)
    meta: dict[str, Any] = {}
    lists = _item_lists(paths, transitions, item_knn)
    for name, (fit, path) in lists.items():
        started = time.perf_counter()
        fit(split.train).save(path)
        log(f"{name} fitted on the training split ({time.perf_counter() - started:.1f} s)")
    meta["ranker"] = train_ranker_stage(paths, dataset, split, params, log, progress)
    learnable = learnable_events(dataset, protocol, strict) if lists else []
    for name, (fit, path) in lists.items():
        started = time.perf_counter()
        model = fit(learnable)
        model.save(path)
        meta[path.stem] = {
            **model.info,
            "refitted_on": "learnable events",
            "seconds": round(time.perf_counter() - started, 1),
        }
        log(f"{name} refitted on every learnable event ({time.perf_counter() - started:.1f} s)")
    return meta


class _Fitted(Protocol):
    info: dict[str, Any]

    def save(self, path: Path) -> None: ...


def _item_lists(
    paths: BundlePaths, transitions: bool, item_knn: bool
) -> dict[str, tuple[Callable[[Sequence[events_pb2.Event]], _Fitted], Path]]:
    """The bundle's neighbour-list models to fit (name -> (fit, file)), as asked."""
    out: dict[str, tuple[Callable[[Sequence[events_pb2.Event]], _Fitted], Path]] = {}
    if transitions:
        out["item transitions"] = (fit_transitions, paths.transitions)
    if item_knn:
        out["item neighbours"] = (fit_item_knn, paths.item_knn)
    return out


def train_ranker_stage(
    paths: BundlePaths,
    dataset: Dataset,
    split: StaticSplit,
    params: RankerParams = RankerParams(),
    log: Log = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and write ``paths.ranker``; return the ``ranker`` object for meta.json."""
    started = time.perf_counter()
    retriever = TwoTowerRetriever.load(paths)
    cases = split.cases
    if len(cases) > MAX_CASES:
        cases = random.Random(params.seed).sample(cases, MAX_CASES)
        cases.sort(key=lambda case: case.user_id)
    lists = build_lists(list(dataset.items.values()), split.train, cases, retriever, progress=progress)
    log(
        f"ranker lists: {len(lists):,} of {lists.cases:,} cases have the target among the candidates "
        f"(recall {lists.recall:.3f}), {len(lists.features):,} rows ({time.perf_counter() - started:.1f} s)"
    )
    train, valid = split_by_user(lists)
    # The ranker's shape is chosen on the validation lists, as everything else: the MLP, or the mean of linear
    # rankers, which wins where the lists are few (the MLP on Beauty's 7,781, the linear mean on the generated shop's
    # 1,434; BENCHMARKS.md). A tie keeps the MLP.
    mlp = fit_ranker(train, valid, list(FEATURES), params, log)
    linear = fit_linear_mean(train, valid, list(FEATURES), params, log)
    shapes = {ranker.kind: ranker.metrics["valid"] for ranker in (mlp, linear)}
    fitted = linear if linear.metrics["valid"]["NDCG@10"] > mlp.metrics["valid"]["NDCG@10"] else mlp
    log(f"ranker: {fitted.kind} chosen on the validation lists")
    add_importance(fitted, valid)
    parity = export_ranker(fitted, paths.ranker, valid.features[:4096])
    meta = ranker_meta(fitted, parity)
    meta["shapes_valid"] = shapes
    meta["seconds"] = round(time.perf_counter() - started, 3)
    meta["list_recall"] = lists.recall
    top = ", ".join(f"{k} {v:.4f}" for k, v in list(meta["importance"].items())[:5])
    log(
        f"ranker: valid NDCG@10 {meta['valid']['NDCG@10']:.4f} (blend {meta['blend_valid']['NDCG@10']:.4f}); "
        f"ONNX parity {parity:.1e}; most important: {top}"
    )
    return meta
