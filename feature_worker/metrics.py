"""The worker's metrics: Prometheus text format on `/metrics` (`Settings.metrics_port`), and a log line.

Exported (all prefixed `aisle_worker_`):
- `events_total{outcome}`: `applied`, `duplicate` (already applied: redelivery or a resend) and
  `dead_lettered` events;
- `batches_total`, `batch_seconds` (histogram: fetch to offsets committed, per batch);
- `consumer_lag{partition}`: records on the broker not yet folded and committed by this worker (the
  partition's high watermark minus this consumer's position), per assigned partition;
- `committed_offset{partition}`: the last offset committed, per assigned partition;
- `store_retries_total`: batches retried because Redis could not be reached.
The same figures go to the log every `Settings.log_every_s` seconds.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)


class WorkerMetrics:
    """Counters of one worker process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("aisle_worker_events", "Events consumed, by outcome", ["outcome"], registry=r)
        self.batches = Counter("aisle_worker_batches", "Batches folded and committed", registry=r)
        self.batch_seconds = Histogram(
            "aisle_worker_batch_seconds",
            "Seconds per batch, fetch to commit",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.lag = Gauge(
            "aisle_worker_consumer_lag", "Records not yet folded, per partition", ["partition"], registry=r
        )
        self.committed = Gauge(
            "aisle_worker_committed_offset", "Last committed offset", ["partition"], registry=r
        )
        self.store_retries = Counter(
            "aisle_worker_store_retries", "Batches retried: Redis unreachable", registry=r
        )
        self.applied = 0
        self.duplicates = 0
        self.dead = 0
        self._lags: dict[int, int] = {}
        self._last_log = time.monotonic()
        self._last_applied = 0
        self._last_total = 0

    def serve(self, port: int) -> None:
        """Serve `/metrics` on `port` from a daemon thread."""
        start_http_server(port, registry=self.registry)
        log.info("metrics on http://0.0.0.0:%d/metrics", port)

    def count(self, applied: int, duplicates: int, dead: int) -> None:
        self.applied += applied
        self.duplicates += duplicates
        self.dead += dead
        self.events.labels("applied").inc(applied)
        self.events.labels("duplicate").inc(duplicates)
        self.events.labels("dead_lettered").inc(dead)

    def set_lag(self, partition: int, lag: int) -> None:
        self._lags[partition] = lag
        self.lag.labels(str(partition)).set(lag)

    def forget_partition(self, partition: int) -> None:
        self._lags.pop(partition, None)

    def maybe_log(self, every_s: float) -> None:
        now = time.monotonic()
        if every_s <= 0 or now - self._last_log < every_s:
            return
        if self.applied + self.duplicates + self.dead == self._last_total and not any(self._lags.values()):
            self._last_log = now
            return  # idle: nothing to say
        rate = (self.applied - self._last_applied) / (now - self._last_log)
        log.info(
            "applied %d events (%.0f/s), %d duplicates, %d dead-lettered; lag %s",
            self.applied,
            rate,
            self.duplicates,
            self.dead,
            ", ".join(f"p{p}={lag}" for p, lag in sorted(self._lags.items())) or "-",
        )
        self._last_log, self._last_applied = now, self.applied
        self._last_total = self.applied + self.duplicates + self.dead
