"""Latency summaries."""

from __future__ import annotations

import numpy as np


def summarize_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of latencies given in seconds."""
    ms = np.asarray(samples_s) * 1000.0
    return {
        "n": float(len(ms)),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def format_ms(summary: dict[str, float]) -> str:
    return (
        f"p50 {summary['p50']:.3f} ms, p90 {summary['p90']:.3f} ms, p99 {summary['p99']:.3f} ms, "
        f"max {summary['max']:.2f} ms over {int(summary['n'])} calls"
    )
