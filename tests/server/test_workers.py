"""`python -m server --workers N`: several processes on one port (Kafka + Redis mode, real broker and Redis)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from loadtest.harness.server import ServerProcess, free_port
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.affinity import process_cpus, worker_cpus
from tests.kafka_stack import stack_env
from tests.polling import wait_for
from tests.server.refusals import start_refused
from tests.server.test_metrics import RECOMMEND, scrape, value

WORKERS = 2
#: The workers are pinned (`--cpus`), one CPU each: the first two this machine lets the tests use.
CPUS = sorted(os.sched_getaffinity(0))[:WORKERS]


def calls_by_pid(server: ServerProcess) -> dict[int, float]:
    return {
        int(s.labels["pid"]): s.value
        for s in scrape(server.metrics_url)
        if s.name == "aisle_server_process_calls_total"
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def multi_server(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> Iterator[ServerProcess]:
    tag = uuid.uuid4().hex[:8]
    env = stack_env(kafka_bootstrap, redis_url, f"test{tag}", f"workers-{tag}")
    server = ServerProcess(
        tmp_path / "server",
        env=env,
        workers=WORKERS,
        metrics_port=free_port(),
        args=["--cpus", ",".join(map(str, CPUS))],
    ).start()
    yield server
    server.stop()


def recommend_over_new_channels(server: ServerProcess, channels: int, calls_each: int) -> int:
    """Each channel is a new TCP connection (its own subchannel pool: no sharing), which the kernel gives to one
    of the processes."""
    made = 0
    for n in range(channels):
        with grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            recommend = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
            for _ in range(calls_each):
                answer = recommend(recommendations_pb2.RecommendRequest(user_id=f"u{n}", k=5), timeout=10)
                assert answer.model_version
                made += 1
    return made


@pytest.mark.integration
def test_every_worker_answers_and_all_stop_on_sigterm(multi_server: ServerProcess) -> None:
    wait_for(lambda: len(calls_by_pid(multi_server)) == WORKERS, "every worker's metrics")
    # ServerProcess.start made one health check: wait until it shows, so the baseline is complete.
    wait_for(
        lambda: sum(calls_by_pid(multi_server).values()) == 1, "the start-up health check in the metrics"
    )
    baseline = calls_by_pid(multi_server)
    pids = set(baseline)
    assert multi_server.proc is not None and multi_server.proc.pid not in pids  # workers, not the supervisor
    # Every thread of worker i on CPU i of the list (in turn when the list is shorter than the workers).
    assert sorted(min(process_cpus(pid)) for pid in pids) == sorted(
        worker_cpus(CPUS, i)[0] for i in range(WORKERS)
    )
    assert all(len(process_cpus(pid)) == 1 for pid in pids)

    made = 0
    for _ in range(20):  # 10 new connections a round; all landing on one process 20 times over is ~1e-60
        made += recommend_over_new_channels(multi_server, channels=10, calls_each=3)

        def all_counted(made: int = made) -> bool:
            return sum(calls_by_pid(multi_server).values()) == 1 + made

        wait_for(all_counted, "the calls in the metrics")
        if all(calls > baseline[pid] for pid, calls in calls_by_pid(multi_server).items()):
            break
    served = calls_by_pid(multi_server)
    assert set(served) == pids and all(served[pid] > baseline[pid] for pid in pids), served
    # One /metrics for all: the handling histogram sums every process's calls.
    assert (
        value(
            scrape(multi_server.metrics_url),
            "aisle_grpc_server_handling_seconds_count",
            method=RECOMMEND,
            code="OK",
        )
        == made
    )
    assert value(scrape(multi_server.metrics_url), "aisle_server_workers") == WORKERS

    multi_server.proc.send_signal(signal.SIGTERM)
    assert multi_server.proc.wait(60) == 0, multi_server.log_tail()
    assert not [pid for pid in pids if alive(pid)]
    assert "all server workers stopped" in multi_server.log_tail()


@pytest.mark.integration
def test_a_worker_that_dies_is_restarted(multi_server: ServerProcess) -> None:
    wait_for(lambda: len(calls_by_pid(multi_server)) == WORKERS, "every worker's metrics")
    pids = set(calls_by_pid(multi_server))
    victim = min(pids)
    victim_cpus = process_cpus(victim)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(calls_by_pid(multi_server)) == WORKERS and victim not in calls_by_pid(multi_server),
        "a replacement worker",
    )
    assert value(scrape(multi_server.metrics_url), "aisle_server_worker_restarts_total") == 1
    assert f"(pid {victim}) exited with code -9; restarting it" in multi_server.log_tail(200)
    replacement = (set(calls_by_pid(multi_server)) - pids).pop()
    assert process_cpus(replacement) == victim_cpus  # the same slot, the same CPU

    made = 0
    for _ in range(20):
        made += recommend_over_new_channels(multi_server, channels=10, calls_each=1)

        def all_counted(made: int = made) -> bool:
            return (
                value(
                    scrape(multi_server.metrics_url),
                    "aisle_grpc_server_handling_seconds_count",
                    method=RECOMMEND,
                    code="OK",
                )
                == made
            )

        wait_for(all_counted, "the calls in the metrics")
        if calls_by_pid(multi_server)[replacement] > 0:
            break
    assert calls_by_pid(multi_server)[replacement] > 0

    assert multi_server.proc is not None
    multi_server.proc.send_signal(signal.SIGTERM)
    assert multi_server.proc.wait(60) == 0, multi_server.log_tail()
    assert not [pid for pid in pids | {replacement} if alive(pid)]


def test_embedded_mode_refuses_several_workers(tmp_path: Path) -> None:
    result = start_refused(tmp_path, ["--workers", "2"])
    assert result.returncode == 2
    assert "--workers 2" in result.stderr and "Kafka + Redis mode" in result.stderr
    assert "cannot share" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


@pytest.mark.integration
def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path, kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    env = stack_env(kafka_bootstrap, f"redis://127.0.0.1:{free_port()}/0", f"test{tag}", f"workers-{tag}")
    server = ServerProcess(tmp_path / "server", env=env, workers=WORKERS)
    with pytest.raises(RuntimeError, match="server did not start"):
        server.start(timeout_s=120)
    assert server.proc is not None
    assert server.proc.wait(60) == 1
    assert "before it was serving; stopping" in server.log_tail(200)
