"""Ranking metrics for one held-out target per case.

Every model hands back its top ``CUTOFF`` items per case; a target outside them counts as a miss for every
metric, MRR included. MRR is therefore MRR@``CUTOFF`` for every row alike: a target ranked below 200 would add
less than 0.005 to one case's reciprocal rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: How many items every model ranks per case (the serving path's largest k, `server.recommender.MAX_K`).
CUTOFF = 200
METRICS = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR", "coverage@10")


def rank_of(target: str, ranked: Sequence[str]) -> int | None:
    """1-based position of ``target`` in ``ranked``; None when absent."""
    for position, item in enumerate(ranked, start=1):
        if item == target:
            return position
    return None


def hit(rank: int | None, k: int) -> float:
    """1 when the target is among the first ``k``."""
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg(rank: int | None, k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG@k is ``1 / log2(rank + 1)`` inside the top k."""
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None) -> float:
    return 1.0 / rank if rank is not None else 0.0


@dataclass(slots=True)
class Accumulator:
    """Sums the per-case metrics and collects the items recommended in anyone's top 10."""

    cases: int = 0
    hr10: float = 0.0
    ndcg10: float = 0.0
    hr20: float = 0.0
    ndcg20: float = 0.0
    rr: float = 0.0
    shown: set[str] | None = None
    #: Each case's NDCG@10, in case order: what `paired_difference` compares two models on.
    ndcg10_cases: list[float] = field(default_factory=list)

    def add(self, target: str, ranked: Sequence[str]) -> None:
        rank = rank_of(target, ranked)
        self.cases += 1
        self.hr10 += hit(rank, 10)
        case_ndcg10 = ndcg(rank, 10)
        self.ndcg10 += case_ndcg10
        self.ndcg10_cases.append(case_ndcg10)
        self.hr20 += hit(rank, 20)
        self.ndcg20 += ndcg(rank, 20)
        self.rr += reciprocal_rank(rank)
        if self.shown is None:
            self.shown = set()
        self.shown.update(ranked[:10])

    def result(self, catalog_size: int) -> dict[str, float]:
        """The mean of each metric over the cases; coverage@10: the share of the catalog shown in a top 10."""
        n = self.cases or 1
        return {
            "HR@10": self.hr10 / n,
            "NDCG@10": self.ndcg10 / n,
            "HR@20": self.hr20 / n,
            "NDCG@20": self.ndcg20 / n,
            "MRR": self.rr / n,
            "coverage@10": len(self.shown or ()) / catalog_size if catalog_size else 0.0,
        }


def evaluate(
    targets: Iterable[str], rankings: Iterable[Sequence[str]], catalog_size: int
) -> dict[str, float]:
    """The metrics of rankings against their targets, case by case."""
    acc = Accumulator()
    for target, ranked in zip(targets, rankings, strict=True):
        acc.add(target, ranked)
    return acc.result(catalog_size)
