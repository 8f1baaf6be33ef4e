"""Running `python -m server.gateway` as a child process (tests, benchmarks), on a free port."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.harness.children import ChildProcess


@dataclass
class GatewayProcess(ChildProcess):
    """One gateway before the gRPC server at `backend`; `args` are extra command-line flags."""

    directory: Path
    backend: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "gateway.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self._launch_on_port(
            self.directory / "port",
            [
                "-m",
                "server.gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend",
                self.backend,
                *self.args,
            ],
            self.env,
            timeout_s,
            "gateway",
        )
        return self
