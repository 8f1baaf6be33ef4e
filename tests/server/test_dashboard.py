"""The live dashboard in a real headless chromium: the page loads, its charts draw data from a running server,
the experiments table fills, and the browser console stays free of errors."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from clients.client import AisleClient, ClientOptions
from loadtest.harness.server import ServerProcess, free_port
from loadtest.harness.services.browser import headless_chromium
from protos.aisle.v1 import events_pb2
from tests.shop import Shop, event, item


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    data.mkdir()
    (data / "experiments.json").write_text(
        json.dumps(
            {
                "experiments": [
                    {
                        "name": "popular-weight",
                        "state": "RUNNING",
                        "traffic": 1.0,
                        "variants": [
                            {"name": "control", "weight": 1},
                            {"name": "heavy", "weight": 1, "config": {"blend_weights": {"popular": 1.0}}},
                        ],
                    }
                ]
            }
        )
    )
    process = ServerProcess(
        data, args=["--dashboard-port", str(free_port())], env={"AISLE_ENCRYPTION": "off"}
    )
    process.start()
    yield process
    process.stop()


def dashboard_url(process: ServerProcess) -> str:
    return f"http://127.0.0.1:{process.args[process.args.index('--dashboard-port') + 1]}/"


def test_the_dashboard_renders_live_data_without_console_errors(dashboard_server: ServerProcess) -> None:
    shop = Shop()
    url = dashboard_url(dashboard_server)
    with AisleClient(ClientOptions(target=dashboard_server.target)) as client:
        client.upsert_items([item(shop.id(f"p{i}")) for i in range(12)])

        def traffic(n: int) -> None:
            for i in range(n):
                user = f"{shop.prefix}-u{i % 20}"
                answer = client.recommend(user, 5)
                if i % 3 == 0 and answer.items:
                    click = event(
                        user,
                        events_pb2.CLICK,
                        answer.items[0].item_id,
                        ts_ms=0,
                        recommendation_id=answer.recommendation_id,
                    )
                    client.track([click])

        traffic(60)
        with headless_chromium() as driver:
            driver.get(url)
            wait = WebDriverWait(driver, 60, poll_frequency=0.2)
            deadline = time.monotonic() + 60
            # Keep the server busy while the page polls, so consecutive samples see requests.
            while int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-points") or 0) < 3:
                assert time.monotonic() < deadline, "the page never got three samples"
                traffic(10)
                time.sleep(0.3)
            traffic(30)
            time.sleep(2.5)  # one more refresh with the latest traffic
            canvases = driver.find_elements(By.CSS_SELECTOR, ".chart .uplot canvas")
            assert len(canvases) == 4
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.experiment tr"))
            rows = driver.find_elements(By.CSS_SELECTOR, "table.experiment tr")
            assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows[1:]] == ["control", "heavy"]
            assert "popular-weight" in driver.find_element(By.ID, "experiments").text
            # The charts drew real data: the API the page reads has a positive request rate.
            with urllib.request.urlopen(url + "api/dashboard", timeout=10) as response:
                view = json.loads(response.read())
            assert any((p["recommend_per_s"] or 0) > 0 for p in view["points"])
            assert any(p["p50_ms"] is not None for p in view["points"])
            answers = sum(v["answers"] for v in view["experiments"][0]["variants"])
            clicks = sum(v["click"] for v in view["experiments"][0]["variants"])
            assert answers >= 60 and clicks >= 20
            # selenium declares no types for get_log.
            logs = driver.get_log("browser")  # type: ignore[no-untyped-call]
            errors = [entry for entry in logs if entry["level"] == "SEVERE"]
            assert errors == []


def test_the_grafana_dashboard_only_names_exported_metrics(tmp_path: Path) -> None:
    """Every metric the Grafana panels query is one a server (or, for aisle_worker_*, a worker) exports."""
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from server.dashboard.web import STATIC

    panels = json.loads((STATIC.parent / "grafana" / "aisle.json").read_text())["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    wanted = {
        re.sub(r"_(bucket|count|sum|total)$", "", name) for e in exprs for name in re.findall(r"aisle_\w+", e)
    }
    metered = ServerProcess(
        tmp_path / "metered", metrics_port=free_port(), env={"AISLE_ENCRYPTION": "off"}
    ).start()
    try:
        with AisleClient(ClientOptions(target=metered.target)) as client:
            client.upsert_items([item("g1")])
            client.recommend("someone", 3)
        with urllib.request.urlopen(metered.metrics_url, timeout=10) as response:
            exported = {family.name for family in text_string_to_metric_families(response.read().decode())}
    finally:
        metered.stop()
    from feature_worker.metrics import WorkerMetrics

    worker = {
        metric.describe()[0].name for metric in vars(WorkerMetrics()).values() if hasattr(metric, "describe")
    }
    assert wanted - exported - worker == set()
    assert len(panels) >= 10
