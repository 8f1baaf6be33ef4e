"""`--cpus` / AISLE_CPUS: the server's threads pinned to the CPUs named, bad lists refused at start."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.affinity import check_available, parse_cpu_list, process_cpus, worker_cpus
from tests.server.refusals import start_refused


def test_cpu_lists_are_read_as_linux_writes_them() -> None:
    assert parse_cpu_list("1") == (1,)
    assert parse_cpu_list("0-3") == (0, 1, 2, 3)
    assert parse_cpu_list("4,0-1, 1") == (0, 1, 4)  # sorted, no repeats, spaces allowed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "an empty entry"),
        ("0,,1", "an empty entry"),
        ("a", "'a' is not a CPU number"),
        ("1-", "'1-' is not a CPU number"),
        ("3-1", "goes backwards"),
        ("-1", "is not a CPU number"),
        ("0-100000", "from 0 to 4095"),
    ],
)
def test_a_malformed_cpu_list_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_cpu_list(text)


def test_workers_take_one_cpu_each_in_turn() -> None:
    assert [worker_cpus((2, 5), i) for i in range(3)] == [(2,), (5,), (2,)]


def test_a_cpu_this_process_may_not_use_is_named() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    check_available(allowed)
    with pytest.raises(ValueError, match="CPU 4095 is not available"):
        check_available([allowed[0], 4095])


def test_without_linux_affinity_only_an_empty_list_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")
    monkeypatch.delattr(os, "sched_getaffinity")
    check_available(())  # the default: nothing to pin, nothing asked of the system
    with pytest.raises(ValueError, match="pinning to CPUs needs Linux"):
        check_available((0,))


def one_cpu() -> int:
    """The last CPU this process may use (any one would do)."""
    return max(os.sched_getaffinity(0))


def test_every_thread_of_a_pinned_server_runs_on_its_cpu(tmp_path: Path) -> None:
    cpu = one_cpu()
    server = ServerProcess(tmp_path / "server", args=["--cpus", str(cpu)]).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            recommend = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
            answer = recommend(recommendations_pb2.RecommendRequest(user_id="u1", k=5), timeout=10)
            assert answer.model_version
        assert server.proc is not None
        # gRPC, ONNX Runtime and the metrics started threads before and after the pinning: all of them.
        assert len(os.listdir(f"/proc/{server.proc.pid}/task")) > 1
        assert process_cpus(server.proc.pid) == {cpu}
        assert f"pinned to CPU {cpu}" in server.log_tail(50)
    finally:
        server.stop()


def test_an_unpinned_server_is_left_where_the_scheduler_puts_it(server: ServerProcess) -> None:
    assert server.proc is not None
    assert process_cpus(server.proc.pid) == os.sched_getaffinity(0)


@pytest.mark.parametrize(
    ("cpus", "reason"),
    [("1-0", "goes backwards"), ("4095", "CPU 4095 is not available to this process")],
)
def test_the_server_refuses_cpus_it_cannot_use(tmp_path: Path, cpus: str, reason: str) -> None:
    # The environment is checked as the command line is.
    result = start_refused(tmp_path, [], env={"AISLE_CPUS": cpus})
    assert result.returncode == 2
    assert "--cpus (AISLE_CPUS):" in result.stderr and reason in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
