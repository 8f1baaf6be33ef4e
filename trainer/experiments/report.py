"""``python -m trainer experiment-report --lake DIR --experiment NAME``: how the variants of an experiment did.

Reads the lake's `exposures` and `events` tables, attributes outcomes to answers (`data.attribute`), builds one
row per unit (user, or session for anonymous traffic) and reports per variant: units, exposures, CTR (clicks per
exposure, per unit), add-to-cart and conversion rates (share of units), revenue per unit, each with its interval;
each treatment against the control with Welch intervals and p-values, raw and CUPED-adjusted (pre-period
behaviour as covariate); an always-valid sequential p-value (mSPRT) over daily looks; the sample-ratio mismatch
check; guardrails (latency, empty and backfilled answers, coverage); and for interleaving experiments the
team-draft sign test. Writes ``report.json`` and ``report.md`` under ``--out`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from server.experiments.store import parse
from trainer.experiments.data import attribute, pre_period, read_events, read_exposures
from trainer.experiments.stats import METRICS, compare, cuped, interleaving, mean_ci, msprt, rate_ci, srm

#: Guardrail thresholds: a treatment is flagged when it is worse than the control by more than these.
LATENCY_P99_RATIO = 1.25
EMPTY_RATE_DIFF = 0.01
BACKFILL_RATE_DIFF = 0.05
COVERAGE_RATIO = 0.8
#: Looks of the sequential test when the experiment ran within one day: this many cumulative slices.
INTRADAY_LOOKS = 10


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", type=Path, required=True, help="the lake directory (AISLE_LAKE_DIR)")
    parser.add_argument("--experiment", required=True, help="the experiment's name")
    parser.add_argument(
        "--experiments-file",
        type=Path,
        help="the server's experiments file: variant shares (for the SRM check) and the control "
        "(the first variant); default: equal shares, the control by --control",
    )
    parser.add_argument(
        "--control", help="the control variant (default: the file's first variant, else the first by name)"
    )
    parser.add_argument(
        "--window-h",
        type=float,
        default=24.0,
        help="attribute an event without a known recommendation id to the last answer that showed "
        "its item within this many hours",
    )
    parser.add_argument("--pre-days", type=float, default=14.0, help="pre-period for CUPED, days")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--tau",
        type=float,
        default=0.1,
        help="mSPRT mixture scale, relative to the control's mean (effects of about this size)",
    )
    parser.add_argument("--out", type=Path, help="write report.json and report.md here")


def units_frame(
    exposures: pd.DataFrame, events: pd.DataFrame, window_ms: int, pre_days: float
) -> pd.DataFrame:
    """One row per unit: variant, first exposure time, exposures, clicks, ctr, carted, converted, revenue and the
    pre-period covariates. A unit seen in two variants (it should not be) keeps its first one."""
    first = exposures.sort_values("ts_ms").drop_duplicates("unit").set_index("unit")
    units = pd.DataFrame({"variant": first["variant"], "first_ms": first["ts_ms"]})
    units["exposures"] = exposures.groupby("unit").size()
    credited = attribute(exposures, events, window_ms)
    credited = credited[credited["unit"].isin(units.index)]
    by_type = credited.groupby(["unit", "type"]).size().unstack(fill_value=0)
    for column in ("CLICK", "ADD_TO_CART", "PURCHASE"):
        units[column.lower()] = by_type[column].reindex(units.index, fill_value=0) if column in by_type else 0
    units["revenue"] = credited.groupby("unit")["revenue"].sum().reindex(units.index, fill_value=0.0)
    units["clicks"] = units.pop("click").astype(float)
    units["ctr"] = units["clicks"] / units["exposures"]
    units["carted"] = (units.pop("add_to_cart") > 0).astype(float)
    units["converted"] = (units.pop("purchase") > 0).astype(float)
    covariates = pre_period(events, units["first_ms"], pre_days)
    return units.join(covariates)


def _looks(units: pd.DataFrame) -> list[pd.DataFrame]:
    """Cumulative data at each look: one per UTC day of first exposure, or `INTRADAY_LOOKS` slices in a day."""
    ordered = units.sort_values("first_ms")
    days = (ordered["first_ms"] // 86_400_000).to_numpy()
    if len(set(days.tolist())) > 1:
        return [ordered[days <= day] for day in sorted(set(days.tolist()))]
    n = len(ordered)
    return [ordered.iloc[: max(1, math.ceil(n * (i + 1) / INTRADAY_LOOKS))] for i in range(INTRADAY_LOOKS)]


def analyze(
    units: pd.DataFrame, control: str, shares: dict[str, float], alpha: float = 0.05, tau: float = 0.1
) -> dict[str, Any]:
    """The statistical part of the report, on `units_frame` rows (the simulator calls it directly too)."""
    variants = sorted(set(units["variant"]), key=lambda v: (v != control, v))
    out: dict[str, Any] = {"control": control, "alpha": alpha, "variants": {}, "comparisons": {}}
    counts = [int((units["variant"] == v).sum()) for v in variants]
    out["srm"] = srm(counts, [shares.get(v, 1.0) for v in variants]) | {"units": dict(zip(variants, counts))}
    for variant in variants:
        rows = units[units["variant"] == variant]
        summary: dict[str, Any] = {"units": len(rows), "exposures": int(rows["exposures"].sum())}
        for metric in METRICS:
            values = rows[metric.column].to_numpy(dtype=float)
            summary[metric.name] = (
                rate_ci(int(values.sum()), len(values), alpha) if metric.binary else mean_ci(values, alpha)
            )
        out["variants"][variant] = summary
    control_rows = units[units["variant"] == control]
    looks = _looks(units)
    for variant in variants:
        if variant == control:
            continue
        rows = units[units["variant"] == variant]
        both = units[units["variant"].isin([variant, control])]
        result: dict[str, Any] = {}
        for metric in METRICS:
            t = rows[metric.column].to_numpy(dtype=float)
            c = control_rows[metric.column].to_numpy(dtype=float)
            raw = compare(t, c, alpha)
            adjusted_all, reduction = cuped(
                both[metric.column].to_numpy(dtype=float), both[metric.covariate].to_numpy(dtype=float)
            )
            is_t = (both["variant"] == variant).to_numpy()
            adjusted = compare(adjusted_all[is_t], adjusted_all[~is_t], alpha)
            scale = abs(float(c.mean())) if len(c) and c.mean() != 0 else float(np.std(c)) or 1.0
            sequential = msprt(
                [look[look["variant"] == variant][metric.column].to_numpy(dtype=float) for look in looks],
                [look[look["variant"] == control][metric.column].to_numpy(dtype=float) for look in looks],
                tau * scale,
            )
            result[metric.name] = {
                **raw,
                "significant": bool(raw["p_value"] < alpha),
                "cuped": {
                    **adjusted,
                    "variance_reduction": reduction,
                    "significant": bool(adjusted["p_value"] < alpha),
                },
                "sequential": {
                    "p_value": sequential["p_value"],
                    "looks": len(looks),
                    "tau": sequential["tau"],
                    "significant": bool(sequential["p_value"] < alpha),
                },
            }
        out["comparisons"][variant] = result
    return out


def guardrails(exposures: pd.DataFrame, control: str) -> dict[str, Any]:
    """Per variant: served latency p50/p99 (ms), empty and backfilled shares, items covered; flags against the
    control's values."""
    out: dict[str, Any] = {}
    for variant, rows in exposures.groupby("variant"):
        items = rows["item_ids"].map(len)
        shown = {item for ids in rows["item_ids"] for item in ids}
        out[str(variant)] = {
            "latency_p50_ms": float(np.percentile(rows["served_us"], 50)) / 1000,
            "latency_p99_ms": float(np.percentile(rows["served_us"], 99)) / 1000,
            "empty_rate": float((items == 0).mean()),
            "backfill_rate": float(rows["backfilled"].sum() / max(int(items.sum()), 1)),
            "coverage_items": len(shown),
            "model_versions": sorted(set(rows["model_version"])),
        }
    base = out.get(control)
    for variant, g in out.items():
        flags = []
        if base is not None and variant != control:
            if g["latency_p99_ms"] > LATENCY_P99_RATIO * base["latency_p99_ms"]:
                flags.append(f"latency p99 over {LATENCY_P99_RATIO:g}x the control's")
            if g["empty_rate"] > base["empty_rate"] + EMPTY_RATE_DIFF:
                flags.append("more empty answers")
            if g["backfill_rate"] > base["backfill_rate"] + BACKFILL_RATE_DIFF:
                flags.append("more backfilled items")
            if g["coverage_items"] < COVERAGE_RATIO * base["coverage_items"]:
                flags.append("fewer items covered")
        g["flags"] = flags
    return out


def interleaving_result(
    exposures: pd.DataFrame, events: pd.DataFrame, window_ms: int, alpha: float, teams: tuple[str, str]
) -> dict[str, Any]:
    """Team-draft credits per answer: clicks on items each team contributed."""
    credited = attribute(exposures, events, window_ms)
    clicks = credited[credited["type"] == "CLICK"]
    per_answer = clicks.groupby(["attributed_to", "team"]).size().unstack(fill_value=0)
    credits = [
        (
            int(per_answer.loc[rid, teams[0]]) if teams[0] in per_answer else 0,
            int(per_answer.loc[rid, teams[1]]) if teams[1] in per_answer else 0,
        )
        for rid in per_answer.index
    ]
    credits += [(0, 0)] * (len(exposures) - len(credits))
    return {"teams": list(teams), "answers": len(exposures), **interleaving(credits, alpha)}


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    exposures = read_exposures(args.lake, args.experiment)
    if exposures.empty:
        raise SystemExit(f"no exposures of experiment {args.experiment!r} in {args.lake}")
    spec = None
    if args.experiments_file is not None:
        parsed = parse(args.experiments_file.read_text())  # the server's own reader, checks included
        spec = next((e for e in parsed.experiments if e.name == args.experiment), None)
    variants = sorted(set(exposures["variant"]))
    names = [v.name for v in spec.variants] if spec is not None else variants
    control = args.control or names[0]
    shares = {v.name: v.weight for v in spec.variants} if spec is not None else {v: 1.0 for v in variants}
    window_ms = int(args.window_h * 3_600_000)
    events = read_events(args.lake, set(exposures["unit"]))
    report: dict[str, Any] = {
        "experiment": args.experiment,
        "window_h": args.window_h,
        "pre_days": args.pre_days,
    }
    if variants == ["interleaved"]:
        teams = (
            (names[0], names[1])
            if spec is not None
            else tuple(sorted({t for ts in exposures["teams"] for t in ts}))[:2]
        )
        report["mode"] = "interleaving"
        report["interleaving"] = interleaving_result(exposures, events, window_ms, args.alpha, teams)
        return report
    report["mode"] = "ab"
    units = units_frame(exposures, events, window_ms, args.pre_days)
    report |= analyze(units, control, shares, args.alpha, args.tau)
    report["guardrails"] = guardrails(exposures, control)
    return report


def _fmt(ci: dict[str, float], pct: bool) -> str:
    if ci is None or math.isnan(ci.get("mean", math.nan)):
        return "–"
    f: Callable[[float], str] = (lambda x: f"{100 * x:.2f}%") if pct else (lambda x: f"{x:.4g}")
    return f"{f(ci['mean'])} [{f(ci['low'])}, {f(ci['high'])}]"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Experiment {report['experiment']}", ""]
    if report["mode"] == "interleaving":
        r = report["interleaving"]
        lines += [
            f"Team-draft interleaving of {r['teams'][0]} (A) and {r['teams'][1]} (B) over {r['answers']} answers.",
            "",
            f"- wins A {r['wins_a']}, wins B {r['wins_b']}, ties {r['ties']}",
            f"- sign test p = {r['p_value']:.4g} ({'significant' if r['significant'] else 'not significant'})",
            "",
        ]
        return "\n".join(lines)
    s = report["srm"]
    lines += [
        f"Control: **{report['control']}**, alpha {report['alpha']}. Units: "
        + ", ".join(f"{k} {v}" for k, v in s["units"].items())
        + ".",
        "",
        f"Sample-ratio check: chi2 {s['chi2']:.3f}, p = {s['p_value']:.4g}"
        + (" — **SAMPLE RATIO MISMATCH: do not trust this experiment**" if s["mismatch"] else " (ok)"),
        "",
        "| variant | units | exposures | CTR | add-to-cart | conversion | revenue/user |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"| {name} | {v['units']} | {v['exposures']} | {_fmt(v['ctr'], True)} | "
            f"{_fmt(v['add_to_cart'], True)} | {_fmt(v['conversion'], True)} | "
            f"{_fmt(v['revenue_per_user'], False)} |"
        )
    for variant, result in report["comparisons"].items():
        lines += [
            "",
            f"## {variant} vs {report['control']}",
            "",
            "| metric | diff [CI] | lift | p | CUPED diff [CI] | CUPED p | var. reduction | sequential p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for metric, r in result.items():
            c = r["cuped"]
            lines.append(
                f"| {metric} | {r['diff']:.4g} [{r['low']:.4g}, {r['high']:.4g}] | {100 * r['relative_lift']:.1f}% | "
                f"{r['p_value']:.3g}{' *' if r['significant'] else ''} | {c['diff']:.4g} [{c['low']:.4g}, "
                f"{c['high']:.4g}] | {c['p_value']:.3g}{' *' if c['significant'] else ''} | "
                f"{100 * c['variance_reduction']:.0f}% | {r['sequential']['p_value']:.3g}"
                f"{' *' if r['sequential']['significant'] else ''} |"
            )
    lines += [
        "",
        "## Guardrails",
        "",
        "| variant | p50 ms | p99 ms | empty | backfilled | items covered | flags |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, g in report["guardrails"].items():
        lines.append(
            f"| {name} | {g['latency_p50_ms']:.3f} | {g['latency_p99_ms']:.3f} | {100 * g['empty_rate']:.1f}% | "
            f"{100 * g['backfill_rate']:.1f}% | {g['coverage_items']} | {'; '.join(g['flags']) or 'none'} |"
        )
    lines += [
        "",
        "`*`: significant at alpha. The sequential p-value stays valid however often the report is run.",
    ]
    return "\n".join(lines) + "\n"


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def run(args: argparse.Namespace) -> int:
    raw = build_report(args)
    text = markdown(raw)
    report = _clean(raw)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "report.md").write_text(text)
    print(text)
    return 0
