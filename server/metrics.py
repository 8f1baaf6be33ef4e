"""The server's Prometheus metrics: where the time of every call goes.

Exported on `/metrics` (Prometheus text format) at ``AISLE_METRICS_HOST:AISLE_METRICS_PORT`` when the port is set:

- ``aisle_grpc_server_handling_seconds{method, code}`` (histogram): each unary call from its decoded request to
  its response or status, per full gRPC method name (``/aisle.v1.RecommendationService/Recommend``) and status
  code name (``OK``, ``INVALID_ARGUMENT``, …). Transport and (de)serialization are not included. Only methods the
  server registered are recorded (an unknown method name cannot add a label value), and only unary ones (the
  reflection stream and Health/Watch are not timed).
- ``aisle_recommend_stage_seconds{stage}`` (histogram): each stage of one Recommend (`server.stages.STAGES`). A
  stage the serving path did not run (time exactly 0.0) is not recorded.
- ``aisle_server_process_calls_total{pid}`` and ``aisle_server_process_cpu_seconds_total{pid}``: calls answered and
  CPU time used per server process (with ``--workers N``, one series per live process).

Observing costs a ``bisect`` and two list additions (well under a microsecond), not prometheus_client's
locked ``Histogram.observe`` (about 3.5 µs here, 8 µs in its multiprocess mode): the counts live in plain lists
that only the event loop's thread writes, and are turned into metric families when scraped. With
``--workers N`` each server process writes its counts to a snapshot file every `SNAPSHOT_EVERY_S` seconds (and
when it stops) and the supervising process serves one `/metrics` that sums them (`SnapshotCollector`); counts of
a process that crashed stay in the sums as of its last snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from server.experiments.metrics import families as serving_families
from server.stages import StageTimes

log = logging.getLogger(__name__)

#: Upper bounds in seconds: fine around the millisecond budget, coarse up to a second.
BUCKETS: tuple[float, ...] = (
    25e-6,
    50e-6,
    75e-6,
    100e-6,
    150e-6,
    200e-6,
    250e-6,
    300e-6,
    400e-6,
    500e-6,
    600e-6,
    750e-6,
    1e-3,
    1.5e-3,
    2e-3,
    3e-3,
    4e-3,
    5e-3,
    7.5e-3,
    10e-3,
    25e-3,
    50e-3,
    100e-3,
    250e-3,
    500e-3,
    1.0,
)
HANDLING = "aisle_grpc_server_handling_seconds"
STAGE = "aisle_recommend_stage_seconds"
#: Seconds between the snapshot files a process of a multi-process server writes.
SNAPSHOT_EVERY_S = 1.0

Series = list[float]  # counts per bucket (the last one is +Inf), then the sum of the observed values


class Histogram:
    """One histogram family with fixed label names, written by one thread (the event loop's).

    `observe` is the hot path; `snapshot` (any thread) copies the counts. A scrape may see one observation's
    bucket without its sum, never a torn bucket list or a count that goes down.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._series: dict[tuple[str, ...], Series] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(BUCKETS) + 2)
        # bisect_left finds the first bound >= seconds: Prometheus buckets are "less than or equal".
        series[bisect_left(BUCKETS, seconds)] += 1
        series[-1] += seconds

    def snapshot(self) -> list[tuple[list[str], Series]]:
        """[(label values, counts per bucket + sum)], copied."""
        return [(list(labels), list(series)) for labels, series in list(self._series.items())]

    def count(self) -> int:
        """Observations so far, over every label set."""
        return int(sum(sum(series[:-1]) for _, series in list(self._series.items())))


class ServerMetrics:
    """The histograms of one server process. `observe_stages` is `Engine.stage_observer`."""

    def __init__(self) -> None:
        self.handling = Histogram(
            HANDLING,
            "Seconds a unary gRPC call took in the server, by method and status code",
            ("method", "code"),
        )
        self.stages = Histogram(STAGE, "Seconds spent in each stage of Recommend", ("stage",))
        self.pid = os.getpid()
        #: The engine's serving figures (`server.experiments.metrics.snapshot`), set once the engine is built.
        self.serving: Callable[[], dict[str, Any]] | None = None

    def observe_stages(self, times: StageTimes) -> None:
        observe = self.stages.observe
        for stage, seconds in times.items():
            if seconds > 0.0:
                observe((stage,), seconds)

    def snapshot(self) -> dict[str, Any]:
        """Everything this process counted, as JSON-ready data (what `SnapshotCollector` reads)."""
        return {
            "pid": self.pid,
            "calls": self.handling.count(),
            "cpu_seconds": time.process_time(),
            "histograms": {
                h.name: {"help": h.documentation, "labels": list(h.labelnames), "series": h.snapshot()}
                for h in (self.handling, self.stages)
            },
            "serving": self.serving() if self.serving is not None else None,
        }


def families(snapshots: Iterable[dict[str, Any]], live_pids: set[int] | None = None) -> Iterator[Metric]:
    """The metric families of some processes' snapshots: histograms summed, per-process series for `live_pids`
    (every snapshot's process when None)."""
    snapshots = list(snapshots)
    merged: dict[str, tuple[str, list[str], dict[tuple[str, ...], Series]]] = {}
    calls = CounterMetricFamily(
        "aisle_server_process_calls", "Unary calls answered by each server process", labels=["pid"]
    )
    cpu = CounterMetricFamily(
        "aisle_server_process_cpu_seconds", "CPU seconds used by each server process", labels=["pid"]
    )
    for snap in snapshots:
        if live_pids is None or snap["pid"] in live_pids:
            calls.add_metric([str(snap["pid"])], snap["calls"])
            cpu.add_metric([str(snap["pid"])], snap["cpu_seconds"])
        for name, hist in snap["histograms"].items():
            _, _, by_labels = merged.setdefault(name, (hist["help"], hist["labels"], {}))
            for labels, series in hist["series"]:
                total = by_labels.setdefault(tuple(labels), [0.0] * len(series))
                for i, value in enumerate(series):
                    total[i] += value
    for name, (documentation, labelnames, by_labels) in merged.items():
        family = HistogramMetricFamily(name, documentation, labels=labelnames)
        for labels, series in sorted(by_labels.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BUCKETS, float("inf")), series[:-1]):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            family.add_metric(list(labels), buckets, series[-1])
        yield family
    yield calls
    yield cpu
    yield from serving_families(s["serving"] for s in snapshots if s.get("serving"))


class LiveCollector(Collector):
    """Collects one process's `ServerMetrics` as they are now (a single-process server)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return families([self.metrics.snapshot()])


class SnapshotCollector(Collector):
    """Collects every snapshot file in a directory (the processes of a multi-process server), plus the
    supervisor's own figures."""

    def __init__(
        self, directory: Path, live_pids: Callable[[], set[int]], restarts: Callable[[], int]
    ) -> None:
        self.directory = directory
        self.live_pids = live_pids
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        snapshots = read_snapshots(self.directory)
        live = self.live_pids()
        yield from families(snapshots, live)
        workers = GaugeMetricFamily("aisle_server_workers", "Server processes running")
        workers.add_metric([], len(live))
        yield workers
        restarts = CounterMetricFamily(
            "aisle_server_worker_restarts", "Server processes restarted after dying"
        )
        restarts.add_metric([], self.restarts())
        yield restarts


def read_snapshots(directory: Path) -> list[dict[str, Any]]:
    """Every process's snapshot file in `directory` (a file replaced while read is skipped: the next read has it)."""
    snapshots = []
    for path in sorted(directory.glob("*.json")):
        try:
            snapshots.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return snapshots


def write_snapshot(metrics: ServerMetrics, directory: Path) -> None:
    """Replace this process's snapshot file atomically (write, then rename)."""
    path = directory / f"{metrics.pid}.json"
    tmp = directory / f".{metrics.pid}.tmp"
    tmp.write_text(json.dumps(metrics.snapshot()))
    os.replace(tmp, path)


async def write_snapshots(metrics: ServerMetrics, directory: Path, every_s: float = SNAPSHOT_EVERY_S) -> None:
    """Write the snapshot now and every `every_s` seconds until cancelled, then once more."""
    try:
        while True:
            write_snapshot(metrics, directory)
            await asyncio.sleep(every_s)
    finally:
        write_snapshot(metrics, directory)


def serve_metrics(collector: Collector, host: str, port: int) -> None:
    """Serve `/metrics` for `collector` on host:port from a daemon thread. Raises OSError if it cannot bind."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
