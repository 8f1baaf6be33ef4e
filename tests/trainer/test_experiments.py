"""The experiment report and the simulator: attribution, the statistics' error rates (seeded), and live runs of
the simulator against a real server whose lake the report reads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trainer.__main__ import main
from trainer.experiments.data import attribute
from trainer.experiments.simulate import configure, false_positive_rates, run_live
from trainer.experiments.stats import Floats, cuped, msprt, srm

HOUR = 3_600_000


def exposures(*rows: tuple[str, str, int, str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"recommendation_id": r, "unit": u, "ts_ms": t, "variant": v, "item_ids": items, "teams": []}
            for r, u, t, v, items in rows
        ]
    )


def events(*rows: tuple[str, str, str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "type": t,
                "unit": u,
                "item_id": item,
                "item_ids": None,
                "ts_ms": ts,
                "recommendation_id": rid,
                "revenue": 10.0 if t == "PURCHASE" else 0.0,
            }
            for i, (t, u, item, ts, rid) in enumerate(rows)
        ]
    )


def test_attribution_by_id_then_last_answer_within_the_window() -> None:
    shown = exposures(
        ("r1", "u1", 1000, "a", ["x", "y"]),
        ("r2", "u1", 2000, "b", ["y", "z"]),
        ("r3", "u2", 1000, "a", ["x"]),
    )
    acted = events(
        ("CLICK", "u1", "x", 5000, "r1"),  # its id: r1
        ("PURCHASE", "u1", "y", 6000, ""),  # no id: the last answer showing y to u1 before 6000 is r2
        ("CLICK", "u1", "x", 1500, "unknown"),  # unknown id: the last answer showing x before 1500 is r1
        ("CLICK", "u2", "x", 1000 + 25 * HOUR, ""),  # outside the 24 h window: nobody's
        ("CLICK", "u2", "q", 2000, ""),  # an item never shown to u2: nobody's
        ("VIEW", "u1", "x", 5000, "r1"),  # not an outcome
    )
    credited = attribute(shown, acted, 24 * HOUR)
    got = sorted(zip(credited["event_id"], credited["attributed_to"], credited["variant"]))
    assert got == [("e0", "r1", "a"), ("e1", "r2", "b"), ("e2", "r1", "a")]


def test_srm_flags_a_broken_split_only() -> None:
    assert srm([5000, 5050], [1, 1])["mismatch"] is False
    assert srm([5000, 4600], [1, 1])["mismatch"] is True
    assert srm([7500, 2500], [3, 1])["mismatch"] is False


def test_cuped_removes_variance_explained_by_the_pre_period() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    y = 2 * x + rng.normal(size=5000)
    adjusted, reduction = cuped(y, x)
    assert reduction == pytest.approx(0.8, abs=0.03) and adjusted.mean() == pytest.approx(y.mean())


def test_msprt_is_always_valid_and_finds_a_real_difference() -> None:
    rng = np.random.default_rng(1)

    def looks(a: Floats, b: Floats) -> tuple[list[Floats], list[Floats]]:
        return [a[:n] for n in range(100, 2001, 100)], [b[:n] for n in range(100, 2001, 100)]

    same = msprt(*looks(rng.normal(size=2000), rng.normal(size=2000)), tau=0.2)
    assert same["p_value"] > 0.05 and all(a >= b for a, b in zip(same["path"], same["path"][1:]))
    shifted = msprt(*looks(rng.normal(0.3, 1, size=2000), rng.normal(size=2000)), tau=0.2)
    assert shifted["p_value"] < 0.001


def test_aa_false_positive_rate_is_within_alpha() -> None:
    """300 seeded A/A experiments of 300 customers per variant: each test calls a difference in at most alpha of
    them, give or take two binomial standard errors of the estimate (0.025 at 300 runs). (1,000 runs of 500: raw
    0.042-0.054, CUPED 0.041-0.055, sequential at most 0.002, BENCHMARKS.md.)"""
    alpha, runs = 0.05, 300
    slack = 2 * np.sqrt(alpha * (1 - alpha) / runs)
    rates = false_positive_rates(runs, 300, seed=7, alpha=alpha)
    for metric, tests in rates.items():
        for test, rate in tests.items():
            assert rate <= alpha + slack, (metric, test, rate)


def simulate(tmp_path: Path, *extra: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    configure(parser)
    return run_live(parser.parse_args(["--users", "240", "--sessions", "3", "--out", str(tmp_path), *extra]))


def test_the_simulator_finds_a_true_lift_against_a_live_server(tmp_path: Path) -> None:
    """Control: popular items only; treatment: the default, personal configuration. The customers click what
    matches their tastes, so the treatment truly does better, and the report says so."""
    outcome = simulate(tmp_path, "--name", "personal-vs-popular", "--seed", "4")
    report = outcome["report"]
    assert report["srm"]["mismatch"] is False
    ctr = report["comparisons"]["treatment"]["ctr"]
    assert ctr["significant"] and ctr["low"] > 0 and ctr["cuped"]["significant"]
    assert report["variants"]["control"]["units"] + report["variants"]["treatment"]["units"] == 240
    assert report["guardrails"]["treatment"]["empty_rate"] == 0


def test_an_aa_run_against_a_live_server_stays_quiet(tmp_path: Path) -> None:
    outcome = simulate(tmp_path, "--name", "same-same", "--seed", "5", "--treatment", "same")
    for metric, result in outcome["report"]["comparisons"]["treatment"].items():
        assert not result["significant"] and not result["sequential"]["significant"], metric


def test_interleaving_credits_clicks_to_the_better_ranking(tmp_path: Path) -> None:
    outcome = simulate(tmp_path, "--name", "mixed", "--seed", "6", "--interleave")
    result = outcome["report"]["interleaving"]
    assert result["teams"] == ["control", "treatment"]
    assert result["significant"] and result["wins_b"] > result["wins_a"]


def test_experiment_report_command_writes_json_and_markdown(tmp_path: Path) -> None:
    outcome = simulate(tmp_path, "--name", "for-the-cli", "--seed", "8")
    out = tmp_path / "report"
    assert (
        main(
            [
                "experiment-report",
                "--lake",
                outcome["simulation"]["lake"],
                "--experiment",
                "for-the-cli",
                "--control",
                "control",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    written = json.loads((out / "report.json").read_text())
    assert set(written["variants"]) == {"control", "treatment"}
    assert written["srm"]["p_value"] is not None
    assert "## treatment vs control" in (out / "report.md").read_text()
