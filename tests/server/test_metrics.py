"""`/metrics` of a real server process after real calls over a real channel."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from clients.client import AisleClient, ClientOptions
from loadtest.harness.server import ServerProcess, free_port
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.metrics import BUCKETS, ServerMetrics, families
from server.stages import STAGES, StageTimes
from tests.shop import BASE_TS, Shop, item, view

RECOMMEND = "/aisle.v1.RecommendationService/Recommend"
HANDLING = "aisle_grpc_server_handling_seconds"


def scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist (yet)."""
    return next((s.value for s in samples if s.name == name and s.labels == labels), 0.0)


@pytest.fixture
def metered_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", metrics_port=free_port()).start()
    yield process
    process.stop()


def test_handling_histogram_per_method_and_code(metered_server: ServerProcess) -> None:
    with grpc.insecure_channel(metered_server.target) as channel:
        recommend = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
        for _ in range(3):
            recommend(recommendations_pb2.RecommendRequest(user_id="u-metrics", k=5), timeout=10)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as bad:
                recommend(recommendations_pb2.RecommendRequest(user_id="u-metrics", k=500), timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Undecodable bytes never reach the handler: the error interceptor answers, and the metrics see it.
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            RECOMMEND, request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as undecodable:
            raw(b"\xff\xff\xff", timeout=10)
        assert undecodable.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    samples = scrape(metered_server.metrics_url)
    assert value(samples, f"{HANDLING}_count", method=RECOMMEND, code="OK") == 3
    assert value(samples, f"{HANDLING}_count", method=RECOMMEND, code="INVALID_ARGUMENT") == 3
    # ServerProcess.start waited for the health service: that call is timed too.
    assert value(samples, f"{HANDLING}_count", method="/grpc.health.v1.Health/Check", code="OK") >= 1
    assert value(samples, f"{HANDLING}_bucket", method=RECOMMEND, code="OK", le="+Inf") == 3
    assert value(samples, f"{HANDLING}_sum", method=RECOMMEND, code="OK") > 0
    bounds = {s.labels["le"] for s in samples if s.name == f"{HANDLING}_bucket"}
    assert {"2.5e-05", "0.001", "1.0", "+Inf"} <= bounds
    calls = [s for s in samples if s.name == "aisle_server_process_calls_total"]
    assert metered_server.proc is not None  # started by the fixture
    assert len(calls) == 1 and calls[0].labels["pid"] == str(metered_server.proc.pid)


def test_stage_histogram_after_recommend(metered_server: ServerProcess) -> None:
    with grpc.insecure_channel(metered_server.target) as channel:
        recommend = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
        for _ in range(4):
            recommend(recommendations_pb2.RecommendRequest(user_id="u-stages", k=10), timeout=10)
    samples = scrape(metered_server.metrics_url)
    stages = {s.labels["stage"] for s in samples if s.name == "aisle_recommend_stage_seconds_count"}
    assert stages <= set(STAGES)
    # Whatever else the serving path times, every Recommend reads the store and ranks.
    for stage in ("read", "ranking"):
        assert value(samples, "aisle_recommend_stage_seconds_count", stage=stage) == 4
        assert value(samples, "aisle_recommend_stage_seconds_sum", stage=stage) > 0


def test_changed_co_visitation_lists_are_ranked_in_idle_time(metered_server: ServerProcess) -> None:
    shop = Shop()
    names = [f"x{i}" for i in range(6)]
    with AisleClient(ClientOptions(target=metered_server.target)) as client:
        client.upsert_items(item(shop.id(name), category=shop.category("skin/cream")) for name in names)
        # Two customers view the six items in turn: each item's list of co-viewed items changes.
        events = [
            view(user, shop.id(name), BASE_TS + n * 60_000)
            for user in ("u-lists-1", "u-lists-2")
            for n, name in enumerate(names)
        ]
        events.append(view("u-lists-3", shop.id("x0"), BASE_TS + 60 * 60_000))
        assert client.track(events).accepted == len(events)
        # The server ranks those lists between requests (server.retrieval.list_warmer); wait until it has.
        deadline = time.monotonic() + 60
        while True:
            samples = scrape(metered_server.metrics_url)
            if value(samples, "aisle_neighbour_lists_unranked") == 0:
                break
            assert time.monotonic() < deadline, "the changed lists were never ranked"
            time.sleep(0.05)
        assert value(samples, "aisle_neighbour_lists_ranked_total") >= len(names)
        # A Recommend reads the lists the warmer ranked, with the same answer as a read ranking them.
        answer = client.recommend("u-lists-3", k=3)
        assert len(answer.items) == 3
        assert f"co_viewed_with:{shop.id('x0')}" in answer.items[0].reasons


def test_snapshots_of_processes_are_summed() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.handling.observe(("/m", "OK"), 0.0004)
    first.handling.observe(("/m", "OK"), 2.0)  # past the last bound: only +Inf
    second.handling.observe(("/m", "OK"), 0.0004)
    second.observe_stages(StageTimes(read=0.0001, ranking=0.0))  # a stage that did not run is not recorded
    one, two = first.snapshot(), second.snapshot()
    two["pid"] = one["pid"] + 1
    by_name = {f.name: f for f in families([one, two])}
    handling = {(s.name, s.labels.get("le")): s.value for s in by_name[HANDLING].samples}
    assert handling[(f"{HANDLING}_bucket", "0.0004")] == 2
    assert handling[(f"{HANDLING}_bucket", "1.0")] == 2
    assert handling[(f"{HANDLING}_bucket", "+Inf")] == handling[(f"{HANDLING}_count", None)] == 3
    assert handling[(f"{HANDLING}_sum", None)] == pytest.approx(2.0008)
    assert len([s for s in by_name[HANDLING].samples if s.name.endswith("_bucket")]) == len(BUCKETS) + 1
    stages = {s.labels["stage"] for s in by_name["aisle_recommend_stage_seconds"].samples}
    assert stages == {"read"}
    calls = {s.labels["pid"]: s.value for s in by_name["aisle_server_process_calls"].samples}
    assert calls == {str(one["pid"]): 2, str(two["pid"]): 1}
