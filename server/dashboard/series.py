"""What the dashboard plots: the server's snapshots sampled once a second into a ring of points.

`Sampler.sample` turns two successive snapshots (cumulative counts) into one point of rates and latency
percentiles over the second between them; `experiments` turns the live counts into per-variant rates with Wilson
intervals (scipy). Everything here runs in the dashboard's threads, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binomtest

from server.experiments.metrics import summed
from server.metrics import BUCKETS, HANDLING

log = logging.getLogger(__name__)

RECOMMEND = "/aisle.v1.RecommendationService/Recommend"
#: Points kept: ten minutes at one a second.
POINTS = 600

Snapshots = Callable[[], list[dict[str, Any]]]


def _handling(snaps: Sequence[dict[str, Any]]) -> tuple[dict[str, list[float]], float, float]:
    """(Recommend's bucket counts summed over codes and processes, all calls, failed calls)."""
    recommend = [0.0] * (len(BUCKETS) + 2)
    calls = failed = 0.0
    for snap in snaps:
        hist = snap["histograms"].get(HANDLING)
        if hist is None:
            continue
        for (method, code), series in hist["series"]:
            count = sum(series[:-1])
            calls += count
            if code != "OK":
                failed += count
            if method == RECOMMEND:
                for i, value in enumerate(series):
                    recommend[i] += value
    return {"recommend": recommend}, calls, failed


def quantile(counts: Sequence[float], q: float) -> float | None:
    """The q-quantile in seconds from per-bucket counts (linear inside a bucket); None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen, lower = 0.0, 0.0
    for bound, count in zip((*BUCKETS, BUCKETS[-1] * 2), counts):
        if count > 0 and seen + count >= rank:
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return BUCKETS[-1]


def worker_lag(urls: Sequence[str], timeout_s: float = 0.5) -> float | None:
    """Records not yet folded, summed over the workers' `/metrics` (None when none answers)."""
    lag, answered = 0.0, False
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                text = response.read().decode()
        except OSError:
            continue
        answered = True
        for family in text_string_to_metric_families(text):
            if family.name == "aisle_worker_consumer_lag":
                lag += sum(sample.value for sample in family.samples)
    return lag if answered else None


class Sampler:
    """Samples `snapshots()` every `every_s` seconds in a daemon thread; `points` and `latest` are what the
    dashboard's API returns."""

    def __init__(self, snapshots: Snapshots, worker_urls: Sequence[str] = (), every_s: float = 1.0) -> None:
        self.snapshots = snapshots
        self.worker_urls = list(worker_urls)
        self.every_s = every_s
        self.points: deque[dict[str, Any]] = deque(maxlen=POINTS)
        self.latest: list[dict[str, Any]] = []
        self._previous: tuple[float, list[float], float, float, dict[str, float], dict[str, float]] | None = (
            None
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="aisle-dashboard-sampler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a bad sample must not end the dashboard
                log.exception("dashboard sample failed")
            self._stop.wait(self.every_s)

    def sample(self) -> dict[str, Any] | None:
        """Take one sample; returns the point it added (None for the first sample, which has no interval)."""
        now = time.time()
        snaps = self.snapshots()
        hist, calls, failed = _handling(snaps)
        items, backfilled = summed(snaps, "serving", "items"), summed(snaps, "serving", "backfilled")
        # Read before taking the lock: it asks every worker's /metrics over HTTP, which `view` must not wait for.
        lag = worker_lag(self.worker_urls) if self.worker_urls else None
        point = None
        with self._lock:
            self.latest = snaps
            if self._previous is not None:
                t0, rec0, calls0, failed0, items0, backfilled0 = self._previous
                dt = max(now - t0, 1e-6)
                delta = [a - b for a, b in zip(hist["recommend"][:-1], rec0[:-1])]
                delta_items = sum(items.values()) - sum(items0.values())
                delta_backfilled = sum(backfilled.values()) - sum(backfilled0.values())
                freshness = [
                    s["serving"]["freshness_s"]
                    for s in snaps
                    if s.get("serving") and s["serving"].get("freshness_s") is not None
                ]
                point = {
                    "t": now,
                    "calls_per_s": (calls - calls0) / dt,
                    "recommend_per_s": sum(delta) / dt,
                    "errors_per_s": (failed - failed0) / dt,
                    "p50_ms": _ms(quantile(delta, 0.50)),
                    "p95_ms": _ms(quantile(delta, 0.95)),
                    "p99_ms": _ms(quantile(delta, 0.99)),
                    "backfill_rate": delta_backfilled / delta_items if delta_items > 0 else None,
                    "freshness_s": max(freshness) if freshness else None,
                    "worker_lag": lag,
                }
                self.points.append(point)
            self._previous = (now, hist["recommend"], calls, failed, items, backfilled)
        return point

    def view(self) -> dict[str, Any]:
        """The API's answer: the points, the model served and each running experiment's variants."""
        with self._lock:
            points = list(self.points)
            snaps = self.latest
        models = sorted(
            {s["serving"]["model"] for s in snaps if s.get("serving") and s["serving"].get("model")}
        )
        return {"points": points, "models": models, "experiments": experiments(snaps)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _rate(successes: float, trials: float) -> dict[str, float] | None:
    """A rate with its 95 % Wilson interval (scipy)."""
    if trials <= 0:
        return None
    k, n = int(successes), int(trials)
    interval = binomtest(min(k, n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"rate": k / n, "low": float(interval.low), "high": float(interval.high)}


def experiments(snaps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per running experiment, per variant: answers, clicks, click rate per answer and purchases per answer
    with 95 % Wilson intervals, revenue (live counts; the report does the real analysis)."""
    running = sorted({n for s in snaps for n in (s.get("serving") or {}).get("running", [])})
    answers = summed(snaps, "serving", "answers")
    revenue = summed(snaps, "serving", "revenue")
    outcome = {
        name: summed(snaps, "serving", "outcomes", name) for name in ("click", "add_to_cart", "purchase")
    }
    out = []
    for name in running:
        variants: dict[str, dict[str, float]] = {}
        for label, count in answers.items():
            for pair in label.split(";"):
                experiment, _, variant = pair.partition("/")
                if experiment != name:
                    continue
                v = variants.setdefault(
                    variant, {"answers": 0, "click": 0, "add_to_cart": 0, "purchase": 0, "revenue": 0.0}
                )
                v["answers"] += count
                for key in ("click", "add_to_cart", "purchase"):
                    v[key] += outcome[key].get(label, 0)
                v["revenue"] += revenue.get(label, 0.0)
        rows = []
        for variant, v in sorted(variants.items()):
            rows.append(
                {
                    "variant": variant,
                    **v,
                    "ctr": _rate(v["click"], v["answers"]),
                    "purchase_rate": _rate(v["purchase"], v["answers"]),
                }
            )
        out.append({"name": name, "variants": rows})
    return out
