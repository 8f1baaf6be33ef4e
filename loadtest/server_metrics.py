"""The server's own view of a load test: scrape `/metrics` before and after, and summarize the difference.

Quantiles are estimated from the histogram buckets as Prometheus' ``histogram_quantile`` does (linear inside
the bucket that holds the rank), so they are as fine as the buckets (`server.metrics.BUCKETS`: 25 µs steps
below 300 µs, 100–250 µs steps up to 1 ms, then coarser). The mean is exact (sum / count).
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from server.stages import STAGES

HANDLING = "aisle_grpc_server_handling_seconds"
STAGE = "aisle_recommend_stage_seconds"
RECOMMEND = "/aisle.v1.RecommendationService/Recommend"
HEALTH = "/grpc.health.v1.Health/Check"

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class HistogramData:
    """One histogram series: cumulative counts per upper bound (+Inf last), and the sum."""

    buckets: dict[float, float]
    total: float

    @property
    def count(self) -> float:
        return self.buckets.get(math.inf, 0.0)

    def minus(self, earlier: HistogramData | None) -> HistogramData:
        if earlier is None:
            return self
        return HistogramData(
            {b: c - earlier.buckets.get(b, 0.0) for b, c in self.buckets.items()}, self.total - earlier.total
        )

    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Estimated q-quantile in seconds (NaN without observations)."""
        if not self.count:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in sorted(self.buckets.items()):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower  # beyond the last finite bound: the best we can say
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower


@dataclass
class Scrape:
    """The histograms and counters of one `/metrics` scrape."""

    histograms: dict[tuple[str, LabelKey], HistogramData]
    counters: dict[tuple[str, LabelKey], float]
    gauges: dict[tuple[str, LabelKey], float] = field(default_factory=dict)

    def histogram(self, name: str, **labels: str) -> HistogramData | None:
        return self.histograms.get((name, tuple(sorted(labels.items()))))

    def counter_sum(self, name: str) -> float:
        return sum(v for (n, _), v in self.counters.items() if n == name)

    def gauge_sum(self, name: str) -> float | None:
        """The gauge summed over its labels; None when the server does not export it."""
        values = [v for (n, _), v in self.gauges.items() if n == name]
        return sum(values) if values else None


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets: dict[tuple[str, LabelKey], dict[float, float]] = defaultdict(dict)
    sums: dict[tuple[str, LabelKey], float] = {}
    counters: dict[tuple[str, LabelKey], float] = {}
    gauges: dict[tuple[str, LabelKey], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = (family.name, tuple(sorted(labels.items())))
            if family.type == "histogram" and sample.name.endswith("_bucket"):
                buckets[key][float(sample.labels["le"])] = sample.value
            elif family.type == "histogram" and sample.name.endswith("_sum"):
                sums[key] = sample.value
            elif family.type == "counter" and sample.name.endswith("_total"):
                counters[key] = sample.value
            elif family.type == "gauge":
                gauges[key] = sample.value
    histograms = {key: HistogramData(b, sums.get(key, 0.0)) for key, b in buckets.items()}
    return Scrape(histograms, counters, gauges)


def difference(before: Scrape, after: Scrape, name: str, **labels: str) -> HistogramData | None:
    now = after.histogram(name, **labels)
    return now.minus(before.histogram(name, **labels)) if now is not None else None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}" if not math.isnan(seconds) else "-"


def breakdown(before: Scrape, after: Scrape) -> str:
    """A markdown table: Recommend as the server timed it, each stage, and server CPU per call."""
    rows = ["| server side | calls | mean ms | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    handling = difference(before, after, HANDLING, method=RECOMMEND, code="OK")
    if handling is not None:
        rows.append(
            f"| Recommend handler (OK) | {handling.count:.0f} | {_ms(handling.mean())} | "
            f"{_ms(handling.quantile(0.5))} | {_ms(handling.quantile(0.99))} |"
        )
    for stage in STAGES:
        data = difference(before, after, STAGE, stage=stage)
        if data is not None and data.count:
            rows.append(
                f"| stage {stage} | {data.count:.0f} | {_ms(data.mean())} | {_ms(data.quantile(0.5))} | "
                f"{_ms(data.quantile(0.99))} |"
            )
    calls = after.counter_sum("aisle_server_process_calls") - before.counter_sum("aisle_server_process_calls")
    cpu = after.counter_sum("aisle_server_process_cpu_seconds") - before.counter_sum(
        "aisle_server_process_cpu_seconds"
    )
    if calls > 0:
        rows.append(
            f"\nserver CPU: {cpu * 1000 / calls:.3f} ms per call over {calls:.0f} calls "
            "(every process; includes background work such as list rebuilds)"
        )
    return "\n".join(rows)
