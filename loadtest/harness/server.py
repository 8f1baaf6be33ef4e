"""Running `python -m server` as a child process (tests, benchmarks, tools), with its own data dir.

The child binds a free port (unless told one) and writes it to a port file; `start` returns once the
standard health service answers. Popular/trending lists rebuild on demand (`--lists-refresh-s 0`)
unless `args` says otherwise, which keeps answers deterministic for tests. `workers` > 1 starts a supervised
multi-process server (Kafka + Redis mode only); `metrics_port` serves `/metrics` there (`free_port()` finds one)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.harness.children import ChildProcess
from loadtest.harness.services.process import free_port

#: `free_port` is re-exported: the runners' users import it with `ServerProcess`.
__all__ = ["ServerProcess", "free_port"]


@dataclass
class ServerProcess(ChildProcess):
    """One server process. `restart()` keeps the data dir (and so the journal)."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = 0
    workers: int = 1
    metrics_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: For a server that serves TLS (`AISLE_TLS_*` in `env`): how the start-up health check connects.
    credentials: grpc.ChannelCredentials | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._launch_on_port(
            self.data_dir / "port",
            [
                "-m",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--lists-refresh-s",
                "0",
                "--workers",
                str(self.workers),
                "--metrics-port",
                str(self.metrics_port),
                *self.args,
            ],
            self.env,
            timeout_s,
            "server",
        )
        with self.channel() as channel:
            # types-grpcio-health-checking declares HealthStub without its methods.
            health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True
            )
        return self

    def channel(self) -> grpc.Channel:
        """A blocking channel to the server: TLS with `credentials` when set, plaintext otherwise."""
        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials)
        return grpc.insecure_channel(self.target)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()
