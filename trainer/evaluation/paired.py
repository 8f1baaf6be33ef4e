"""Paired comparisons of `trainer evaluate`'s rows: how much ``aisle`` is ahead of (or behind) each other row on
the very same cases, with a confidence interval, so that a difference of a few thousandths can be read as a
difference or as noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from trainer.evaluation.harness import ModelResult

#: The row every other row is compared with.
REFERENCE = "aisle"
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Difference:
    """A mean paired difference with its confidence interval, and the cases each side wins."""

    mean: float
    low: float
    high: float
    better: int
    worse: int


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Difference:
    """``a`` minus ``b``, case by case (the same cases in the same order): the mean difference and its
    ``confidence`` interval by Student's t over the per-case differences (thousands of cases here, so the mean is
    close to normal whatever one case's metric looks like). Two models measured on the same cases differ far
    less from case to case than either does from its own mean, so this interval is much narrower than one
    made from the two means' separate errors."""
    if len(a) != len(b):
        raise ValueError(f"paired cases must match: {len(a)} against {len(b)}")
    n = len(a)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    better = sum(1 for d in diffs if d > 0)
    worse = sum(1 for d in diffs if d < 0)
    if n == 0:
        return Difference(0.0, 0.0, 0.0, 0, 0)
    mean = math.fsum(diffs) / n
    if n == 1:
        return Difference(mean, -math.inf, math.inf, better, worse)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Difference(mean, mean - half, mean + half, better, worse)


def paired_rows(rows: Sequence[tuple[str, Sequence[ModelResult]]]) -> list[dict[str, float | int | str]]:
    """NDCG@10 of `REFERENCE` minus each other row's, paired over the cases of a single run (none without the
    reference row, with under two cases, or with several runs: `--users` draws other cases per seed)."""
    results = dict(rows)
    reference = results.get(REFERENCE)
    if reference is None or len(reference) != 1 or len(reference[0].case_ndcg10) < 2:
        return []
    out: list[dict[str, float | int | str]] = []
    for name, others in rows:
        if name == REFERENCE or len(others) != 1:
            continue
        d = paired_difference(reference[0].case_ndcg10, others[0].case_ndcg10, CONFIDENCE)
        out.append(
            {
                "model": name,
                "metric": "NDCG@10",
                "difference": d.mean,
                "low": d.low,
                "high": d.high,
                "confidence": CONFIDENCE,
                "cases_better": d.better,
                "cases_worse": d.worse,
            }
        )
    return out


def paired_markdown(paired: Sequence[dict[str, float | int | str]]) -> str:
    """The table `trainer evaluate` prints under its results (empty without paired rows)."""
    if not paired:
        return ""
    lines = [
        f"NDCG@10, {REFERENCE} minus each row on the same cases ({CONFIDENCE:.0%} interval, paired t):",
        f"| row | {REFERENCE} minus row | interval | cases {REFERENCE} ranks better / worse |",
        "|---|---:|---|---:|",
    ]
    for row in paired:
        lines.append(
            f"| {row['model']} | {row['difference']:+.4f} | [{row['low']:+.4f}, {row['high']:+.4f}] "
            f"| {row['cases_better']:,} / {row['cases_worse']:,} |"
        )
    return "\n".join(lines)
