"""The nginx TLS front (`server.front`) from Debian's `nginx` package, on 127.0.0.1, for the TLS tests.

`ensure_nginx()` installs the package with apt-get when the binary is missing, as `ensure_redis_server()` does
for Redis, since CI machines are fresh Debian. The package's own nginx is never started here: the front runs
from its own rendered configuration in its own directory (`python -m server.front` does the same).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from loadtest.harness.services.apt import ensure_package
from loadtest.harness.services.process import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    port_open,
)
from server.front import FrontConfig, command, find_nginx, write


def ensure_nginx() -> str:
    """The path of `nginx`, installing Debian's package first if it is missing (needs root and apt-get).

    A file lock (the one Redis's installer takes) keeps two test sessions from running apt-get at once.
    """
    return ensure_package("nginx", find_nginx)


class NginxFront(ManagedProcess):
    """The TLS front on a free port of 127.0.0.1, passing gRPC to `backend`."""

    name: ClassVar[str] = "nginx"
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0

    def __init__(
        self, workdir: Path, backend: str, cert: Path, key: Path, client_ca: Path | None = None
    ) -> None:
        super().__init__(workdir, die_with_parent=True)
        self.backend, self.cert, self.key, self.client_ca = backend, cert, key, client_ca

    @property
    def port(self) -> int:
        return self.ports["port"]

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _pick_ports(self) -> dict[str, int]:
        return {"port": free_port()}

    def _config(self) -> FrontConfig:
        return FrontConfig(
            f"{LOOPBACK}:{self.port}",
            self.backend,
            self.cert,
            self.key,
            self.workdir / "front",
            self.client_ca,
            log_level="info",
        )

    def _prepare(self) -> None:
        ensure_nginx()
        write(self._config())

    def _command(self) -> list[str]:
        return command(ensure_nginx(), self.workdir / "front" / "nginx.conf")

    def _wait_ready(self, deadline: float) -> None:
        self.wait_for(lambda: port_open(LOOPBACK, self.port), deadline, f"port {self.port}")
