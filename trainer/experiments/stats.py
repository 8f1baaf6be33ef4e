"""The statistics of an experiment report, on one row per unit (user, or session for anonymous traffic).

Library calls, not hand-rolled formulas, wherever a library has the test: statsmodels for means and their
intervals (`DescrStatsW`, `CompareMeans`: Welch), Wilson intervals for proportions (`proportion_confint`) and the
CUPED regression (`OLS`); scipy for the sample-ratio chi-square (`chisquare`) and the interleaving sign test
(`binomtest`). The always-valid sequential test (`msprt`) is the normal-mixture SPRT of Johari, Pekelis and Walsh
("Always valid inference", 2017), which neither library ships: its few lines are written out and documented there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

Floats = npt.NDArray[np.float64]
#: Sample-ratio mismatch is flagged below this p-value (a broken assignment, not bad luck).
SRM_P = 0.001


def mean_ci(values: Floats, alpha: float) -> dict[str, float]:
    """Mean with its (1 - alpha) t interval."""
    if len(values) < 2:
        mean = float(values.mean()) if len(values) else math.nan
        return {"mean": mean, "low": math.nan, "high": math.nan}
    d = DescrStatsW(values)
    low, high = d.tconfint_mean(alpha=alpha)
    return {"mean": float(d.mean), "low": float(low), "high": float(high)}


def rate_ci(successes: int, trials: int, alpha: float) -> dict[str, float]:
    """A proportion with its (1 - alpha) Wilson interval."""
    if trials == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    low, high = proportion_confint(successes, trials, alpha=alpha, method="wilson")
    return {"mean": successes / trials, "low": float(low), "high": float(high)}


def compare(treatment: Floats, control: Floats, alpha: float) -> dict[str, float]:
    """Treatment minus control: difference, its Welch interval, p-value, and the relative lift."""
    if len(treatment) < 2 or len(control) < 2:
        return {
            "diff": math.nan,
            "low": math.nan,
            "high": math.nan,
            "p_value": math.nan,
            "relative_lift": math.nan,
        }
    cm = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    low, high = cm.tconfint_diff(alpha=alpha, usevar="unequal")
    _, p_value, _ = cm.ttest_ind(usevar="unequal")
    base = float(control.mean())
    diff = float(treatment.mean() - base)
    return {
        "diff": diff,
        "low": float(low),
        "high": float(high),
        "p_value": float(p_value),
        "relative_lift": diff / base if base else math.nan,
    }


def cuped(y: Floats, x: Floats) -> tuple[Floats, float]:
    """CUPED (Deng et al. 2013): ``y - theta (x - mean x)`` with theta the pooled OLS slope of y on x (the
    pre-period covariate, which the treatment cannot have moved). Returns the adjusted values and the share of
    variance removed. A constant covariate leaves y as it is."""
    if len(y) < 3 or float(np.var(x)) == 0.0:
        return y, 0.0
    fit = OLS(y, np.column_stack([np.ones_like(x), x])).fit()
    theta = float(fit.params[1])
    adjusted = y - theta * (x - x.mean())
    variance = float(np.var(y))
    return adjusted, (1.0 - float(np.var(adjusted)) / variance) if variance > 0 else 0.0


def srm(counts: Sequence[int], shares: Sequence[float]) -> dict[str, Any]:
    """Sample-ratio mismatch: chi-square of the units per variant against the configured shares."""
    total = float(sum(counts))
    weights = np.asarray(shares, dtype=float) / float(sum(shares))
    if total == 0:
        return {"chi2": math.nan, "p_value": math.nan, "mismatch": False}
    chi2, p_value = sps.chisquare(np.asarray(counts, dtype=float), weights * total)
    return {"chi2": float(chi2), "p_value": float(p_value), "mismatch": bool(p_value < SRM_P)}


def msprt(treatment: Sequence[Floats], control: Sequence[Floats], tau: float) -> dict[str, Any]:
    """Always-valid p-value of "treatment mean = control mean", over looks (one pair of arrays per look, each the
    cumulative data at that look: e.g. one per day).

    At each look, the difference of means d has estimated variance s2 = var_t / n_t + var_c / n_c, and the
    normal-mixture likelihood ratio of H1 (difference ~ N(0, tau^2)) against H0 is
    ``L = sqrt(s2 / (s2 + tau^2)) * exp(d^2 tau^2 / (2 s2 (s2 + tau^2)))``; the always-valid p-value is the
    running minimum of ``min(1, 1 / L)``. Rejecting when it falls below alpha keeps the type I error at alpha
    however often one looks (Johari et al. 2017, section 4). ``tau`` is the scale of effects one expects.
    """
    p_value = 1.0
    path: list[float] = []
    for t, c in zip(treatment, control):
        if len(t) < 2 or len(c) < 2:
            path.append(p_value)
            continue
        d = float(t.mean() - c.mean())
        s2 = float(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
        if s2 <= 0:
            path.append(p_value)
            continue
        t2 = tau * tau
        log_l = 0.5 * math.log(s2 / (s2 + t2)) + d * d * t2 / (2 * s2 * (s2 + t2))
        p_value = min(p_value, min(1.0, math.exp(-log_l)))
        path.append(p_value)
    return {"p_value": p_value, "path": path, "tau": tau}


def interleaving(credits: Sequence[tuple[int, int]], alpha: float) -> dict[str, Any]:
    """Team-draft interleaving: per answer (clicks credited to A, to B). Wins of A among answers with a winner,
    a two-sided sign test (scipy `binomtest`), and the preference Delta = (wins A - wins B) / answers with clicks."""
    wins_a = sum(1 for a, b in credits if a > b)
    wins_b = sum(1 for a, b in credits if b > a)
    ties = sum(1 for a, b in credits if a == b and a > 0)
    decided = wins_a + wins_b
    if decided == 0:
        return {
            "wins_a": 0,
            "wins_b": 0,
            "ties": ties,
            "p_value": math.nan,
            "preference": math.nan,
            "significant": False,
        }
    test = sps.binomtest(wins_a, decided, 0.5)
    ci = test.proportion_ci(confidence_level=1 - alpha, method="wilson")
    return {
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "p_value": float(test.pvalue),
        "share_a": wins_a / decided,
        "share_a_low": float(ci.low),
        "share_a_high": float(ci.high),
        "preference": (wins_a - wins_b) / (decided + ties),
        "significant": bool(test.pvalue < alpha),
    }


@dataclass(frozen=True)
class Metric:
    """A per-unit metric of the report: its column, whether it is a 0/1 rate, and its CUPED covariate."""

    name: str
    column: str
    binary: bool
    covariate: str


METRICS = (
    Metric("ctr", "ctr", False, "pre_clicks"),
    Metric("add_to_cart", "carted", True, "pre_carts"),
    Metric("conversion", "converted", True, "pre_purchases"),
    Metric("revenue_per_user", "revenue", False, "pre_revenue"),
)
