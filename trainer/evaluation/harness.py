"""Runs models through a protocol and measures them: the loop that ``trainer evaluate`` drives.

Static protocols (``loo``, ``time-split``): each model learns the training events, refreshes once, then ranks
every case. ``replay``: all models learn the warm-up events and refresh; then the stream is replayed event by
event, and before an event that has a case every model ranks it; then every model learns the event. Every
``REFRESH_EVENTS`` stream events the models refresh, which for the serving path rebuilds the popular and
trending lists: the server rebuilds them every second (``ServerSettings.lists_refresh_s``), which is about
1,000 events at the ingest rate one server process sustains. A user's own features are folded at once, as the
server folds an event before the next request can read it.

``seconds`` is the wall time a model spent learning, refreshing and ranking; the harness's own work
(splitting, scoring) is not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from trainer.evaluation.base import EvalModel
from trainer.evaluation.metrics import CUTOFF, Accumulator
from trainer.evaluation.protocols import Case, ReplaySplit, StaticSplit

#: Stream events between two refreshes in replay (see the module docstring).
REFRESH_EVENTS = 1_000
#: Cases ranked per `rank` call in the static protocols (progress granularity).
RANK_BATCH = 1_024


@dataclass(slots=True)
class ModelResult:
    """One row of the report."""

    model: str
    metrics: dict[str, float]
    cases: int
    seconds: float
    #: Mean wall time of one ranked case, in milliseconds (the serving path's per-request cost).
    ms_per_case: float
    #: Each case's NDCG@10 in case order (the same order for every model of a run), for paired comparisons.
    case_ndcg10: list[float] = field(default_factory=list)


def run_static(
    split: StaticSplit,
    models: Sequence[Callable[[], EvalModel]],
    catalog_size: int,
    progress: bool = True,
) -> list[ModelResult]:
    """Learn ``split.train``, refresh, rank every case; one model at a time, so memory holds one model."""
    results: list[ModelResult] = []
    for make in models:
        model = make()
        start = time.perf_counter()
        model.update(split.train)
        model.update_private(split.private)
        model.refresh()
        learned = time.perf_counter()
        acc = Accumulator()
        ranking = 0.0
        cases = split.cases
        with tqdm(total=len(cases), desc=model.name, unit="case", disable=not progress, leave=False) as bar:
            for lo in range(0, len(cases), RANK_BATCH):
                batch = cases[lo : lo + RANK_BATCH]
                t = time.perf_counter()
                ranked = model.rank(batch, CUTOFF)
                ranking += time.perf_counter() - t
                for case, items in zip(batch, ranked, strict=True):
                    acc.add(case.target, items)
                bar.update(len(batch))
        seconds = learned - start + ranking
        results.append(
            ModelResult(
                model.name,
                acc.result(catalog_size),
                acc.cases,
                seconds,
                _ms(ranking, acc.cases),
                acc.ndcg10_cases,
            )
        )
    return results


def run_replay(
    split: ReplaySplit,
    models: Sequence[Callable[[], EvalModel]],
    catalog_size: int,
    progress: bool = True,
    refresh_events: int = REFRESH_EVENTS,
) -> list[ModelResult]:
    """Replay ``split.stream`` through every model in lockstep (see the module docstring)."""
    built = [make() for make in models]
    spent = [0.0] * len(built)
    ranking = [0.0] * len(built)
    accs = [Accumulator() for _ in built]
    for m, model in enumerate(built):
        t = time.perf_counter()
        model.update(split.warmup)
        model.refresh()
        spent[m] += time.perf_counter() - t
    stream = split.stream
    cases = split.cases
    with tqdm(total=len(stream), desc="replay", unit="event", disable=not progress, leave=False) as bar:
        for index, event in enumerate(stream):
            case: Case | None = cases.get(index)
            for m, model in enumerate(built):
                t = time.perf_counter()
                if case is not None:
                    ranked = model.rank([case], CUTOFF)[0]
                    took = time.perf_counter() - t
                    ranking[m] += took
                    accs[m].add(case.target, ranked)
                    t = time.perf_counter()
                model.update([event])
                if (index + 1) % refresh_events == 0:
                    model.refresh()
                spent[m] += time.perf_counter() - t
            bar.update(1)
    return [
        ModelResult(
            model.name,
            acc.result(catalog_size),
            acc.cases,
            spent[m] + ranking[m],
            _ms(ranking[m], acc.cases),
            acc.ndcg10_cases,
        )
        for m, (model, acc) in enumerate(zip(built, accs, strict=True))
    ]


def _ms(seconds: float, cases: int) -> float:
    return 1000.0 * seconds / cases if cases else 0.0
