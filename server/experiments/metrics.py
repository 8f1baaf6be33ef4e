"""The serving figures the Prometheus metrics and the dashboard add to the latency histograms of `server.metrics`.

`snapshot(engine)` copies them as JSON-ready data (the event loop writes them; a scrape thread reads a copy), so
a multi-process server sums them like its histograms (`server.metrics.families`). Families:

- ``aisle_recommend_answers_total{variant}``, ``aisle_recommend_items_total{variant}``,
  ``aisle_recommend_backfilled_items_total{variant}`` (backfill rate = backfilled / items),
  ``aisle_recommend_empty_answers_total{variant}``;
- ``aisle_recommend_model_answers_total{model_version}`` and ``aisle_model_served_info{model_version}`` (1 per
  process serving that promoted version);
- ``aisle_outcomes_total{variant, outcome}`` (click, add_to_cart, purchase) and ``aisle_outcome_revenue_total{variant}``:
  live counts of events carrying a recent answer's recommendation id (`serving.Outcomes`);
- ``aisle_exposures_total{result}`` (recorded, dropped), ``aisle_exposures_written_total{sink}``,
  ``aisle_exposures_failed_total{sink}``, ``aisle_exposures_queued``;
- ``aisle_neighbour_lists_unranked``, ``aisle_neighbour_lists_ranked_total``: the embedded store's co-visitation
  lists waiting for idle time, and those ranked in it (`server.retrieval.list_warmer`);
- ``aisle_experiment_running{experiment}``;
- ``aisle_freshness_seconds``: now minus the newest event time the served popular/trending lists reflect (how far
  behind the event stream the derived lists are; large when no events arrive at all).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from server.experiments.model import RUNNING, state_of

if TYPE_CHECKING:
    from server.engine import Engine


def snapshot(engine: Engine) -> dict[str, Any]:
    """The engine's serving figures now (any thread may call it: it copies, never iterates a live dict)."""
    experiments = engine.experiments
    out: dict[str, Any] = {"model": engine.models.version if engine.models is not None else None}
    models = engine.models
    if models is not None and models.warmer is not None:
        current = models.current
        out["proposals"] = {
            "pending": models.warmer.pending,
            "computed": models.warmer.computed,
            "cached": len(current.cache) if current is not None else 0,
        }
    lists = engine.list_warmer
    if lists is not None:
        out["neighbour_lists"] = {"unranked": lists.unranked, "ranked": lists.ranked}
    clock_ms = engine.recommender.lists.clock_ms
    out["freshness_s"] = max(0.0, time.time() - clock_ms / 1000) if clock_ms else None
    if experiments is None:
        return out
    counts, outcomes = experiments.counts, experiments.outcomes
    out["answers"] = dict(counts.answers)
    out["items"] = dict(counts.items)
    out["backfilled"] = dict(counts.backfilled)
    out["empty"] = dict(counts.empty)
    out["models"] = dict(counts.models)
    out["outcomes"] = {
        "click": dict(outcomes.clicks),
        "add_to_cart": dict(outcomes.carts),
        "purchase": dict(outcomes.purchases),
    }
    out["revenue"] = dict(outcomes.revenue)
    out["running"] = [e.name for e in experiments.store.spec.experiments if state_of(e) == RUNNING]
    log = experiments.exposures
    if log is not None:
        out["exposures"] = {
            "recorded": log.recorded,
            "dropped": log.dropped,
            "queued": log.queued,
            "written": dict(log.written),
            "failed": dict(log.failed),
        }
    return out


def summed(snapshots: Iterable[Mapping[str, Any]], *path: str) -> dict[str, float]:
    """The counts by label found at `path` in each snapshot (``summed(snaps, "outcomes", "click")``), summed
    over the snapshots (a missing or empty level counts nothing); labels in the order first seen."""
    total: dict[str, float] = {}
    for snap in snapshots:
        counts: Any = snap
        for key in path:
            counts = (counts or {}).get(key)
        for label, value in (counts or {}).items():
            total[label] = total.get(label, 0) + value
    return total


def families(snapshots: Iterable[dict[str, Any]]) -> Iterator[Metric]:
    """Metric families summed over processes' `snapshot`s."""
    snaps = list(snapshots)
    per_variant = {
        name: CounterMetricFamily(f"aisle_recommend_{name}", doc, labels=["variant"])
        for name, doc in (
            ("answers", "Recommend answers, by experiment variant"),
            ("items", "Items answered by Recommend, by experiment variant"),
            ("backfilled_items", "Items backfilled (popular or in-catalog filler), by experiment variant"),
            ("empty_answers", "Recommend answers with no item, by experiment variant"),
        )
    }
    keys = {
        "answers": "answers",
        "items": "items",
        "backfilled_items": "backfilled",
        "empty_answers": "empty",
    }
    for name, family in per_variant.items():
        for label, value in sorted(summed(snaps, keys[name]).items()):
            family.add_metric([label], value)
        yield family
    models = summed(snaps, "models")
    served: dict[str, float] = {}
    for snap in snaps:
        if snap.get("model"):
            served[snap["model"]] = served.get(snap["model"], 0) + 1
    family = CounterMetricFamily(
        "aisle_recommend_model_answers", "Recommend answers by model version served", labels=["model_version"]
    )
    for label, value in sorted(models.items()):
        family.add_metric([label], value)
    yield family
    proposals = [snap["proposals"] for snap in snaps if snap.get("proposals")]
    if proposals:
        for name, key, doc, kind in (
            (
                "aisle_learned_proposals_pending",
                "pending",
                "User states the warmer has yet to compute",
                "gauge",
            ),
            (
                "aisle_learned_proposals_cached",
                "cached",
                "User states whose learned proposals are remembered",
                "gauge",
            ),
            ("aisle_learned_proposals_computed", "computed", "User states the warmer computed", "counter"),
        ):
            metric = GaugeMetricFamily(name, doc) if kind == "gauge" else CounterMetricFamily(name, doc)
            metric.add_metric([], sum(p.get(key, 0) for p in proposals))
            yield metric
    neighbour_lists = [snap["neighbour_lists"] for snap in snaps if snap.get("neighbour_lists")]
    if neighbour_lists:
        unranked = GaugeMetricFamily(
            "aisle_neighbour_lists_unranked", "Co-visitation lists changed and not yet ranked in idle time"
        )
        unranked.add_metric([], sum(n["unranked"] for n in neighbour_lists))
        yield unranked
        ranked = CounterMetricFamily(
            "aisle_neighbour_lists_ranked", "Co-visitation lists ranked in idle time"
        )
        ranked.add_metric([], sum(n["ranked"] for n in neighbour_lists))
        yield ranked
    gauge = GaugeMetricFamily(
        "aisle_model_served_info",
        "Server processes serving each promoted bundle version",
        labels=["model_version"],
    )
    for label, value in sorted(served.items()):
        gauge.add_metric([label], value)
    yield gauge
    outcomes = CounterMetricFamily(
        "aisle_outcomes",
        "Events attributed live to an answer, by variant and outcome",
        labels=["variant", "outcome"],
    )
    for outcome in ("click", "add_to_cart", "purchase"):
        for label, value in sorted(summed(snaps, "outcomes", outcome).items()):
            outcomes.add_metric([label, outcome], value)
    yield outcomes
    family = CounterMetricFamily(
        "aisle_outcome_revenue", "Revenue of purchases attributed live, by variant", labels=["variant"]
    )
    for label, value in sorted(summed(snaps, "revenue").items()):
        family.add_metric([label], value)
    yield family
    exposures = CounterMetricFamily(
        "aisle_exposures", "Exposures recorded or dropped (queue full)", labels=["result"]
    )
    written = CounterMetricFamily("aisle_exposures_written", "Exposures written, by sink", labels=["sink"])
    failed = CounterMetricFamily(
        "aisle_exposures_failed", "Exposures a sink failed to write", labels=["sink"]
    )
    queued = GaugeMetricFamily("aisle_exposures_queued", "Exposures waiting to be written")
    logs = [snap["exposures"] for snap in snaps if snap.get("exposures") is not None]
    if logs:
        for label in ("dropped", "recorded"):
            exposures.add_metric([label], sum(log[label] for log in logs))
    for label, value in sorted(summed(logs, "written").items()):
        written.add_metric([label], value)
    for label, value in sorted(summed(logs, "failed").items()):
        failed.add_metric([label], value)
    queued.add_metric([], sum((log["queued"] for log in logs), 0.0))
    yield from (exposures, written, failed, queued)
    running = GaugeMetricFamily(
        "aisle_experiment_running", "1 for each running experiment", labels=["experiment"]
    )
    for name in sorted({n for snap in snaps for n in snap.get("running", [])}):
        running.add_metric([name], 1)
    yield running
    fresh = [snap["freshness_s"] for snap in snaps if snap.get("freshness_s") is not None]
    freshness = GaugeMetricFamily(
        "aisle_freshness_seconds", "Now minus the newest event time the served popular/trending lists reflect"
    )
    if fresh:
        freshness.add_metric([], max(fresh))
    yield freshness
