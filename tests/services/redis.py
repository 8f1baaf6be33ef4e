"""A Redis server from Debian's `redis-server` package, with persistence off, on 127.0.0.1.

`ensure_redis_server()` installs the package with apt-get when the binary is missing, since CI machines are
fresh Debian. Persistence is off (`--save ''`, `--appendonly no`), so a restart starts empty: that is what a
"Redis restarted" chaos test wants, and it keeps tests from seeing a previous run's keys.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import redis

from tests.services.apt import ensure_package
from tests.services.process import (
    LOOPBACK,
    ExternalService,
    ManagedProcess,
    free_port,
)

#: The variable that names a Redis to use instead of starting one.
URL_VARIABLE = "AISLE_REDIS_URL"
#: Where Debian's package puts the binary; /usr/bin is not always on a service's PATH.
_DEBIAN_BINARY = Path("/usr/bin/redis-server")


def _find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found is None and _DEBIAN_BINARY.exists():
        found = str(_DEBIAN_BINARY)
    return found


def ensure_redis_server() -> str:
    """The path of `redis-server`, installing Debian's package first if it is missing.

    Installing needs root and apt-get (true on the project's Debian machines and CI); elsewhere this raises
    with what to install. A file lock keeps two test sessions from running apt-get at once. On a machine
    without an init system the package does not start a Redis of its own (invoke-rc.d blocks it).
    """
    return ensure_package("redis-server", _find_redis_server, ", or set AISLE_REDIS_URL to a running Redis")


def ping(url: str, timeout: float = 1.0) -> bool:
    """Whether the Redis at `url` answers PING."""
    try:
        with redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


class RedisService(ManagedProcess):
    """A `redis-server` on 127.0.0.1 whose working dir and log are `workdir`; see the module docstring."""

    name: ClassVar[str] = "redis"
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0

    def __init__(self, workdir: Path, *, die_with_parent: bool = True, appendonly: bool = False) -> None:
        """With `appendonly`, every write is logged and fsynced before Redis answers (`appendfsync always`),
        so a restart, even after a kill, comes back with every acknowledged write: Aisle's production setting."""
        super().__init__(workdir, die_with_parent=die_with_parent)
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        """`"redis://127.0.0.1:PORT/0"`; valid once started, and across restarts."""
        return f"redis://{LOOPBACK}:{self.ports['port']}/0"

    def _pick_ports(self) -> dict[str, int]:
        return {"port": free_port()}

    def _prepare(self) -> None:
        ensure_redis_server()

    def _command(self) -> list[str]:
        return [
            ensure_redis_server(),
            "--port",
            str(self.ports["port"]),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            *(["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]),
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            "",  # stdout, which ManagedProcess sends to redis.log
        ]

    def _wait_ready(self, deadline: float) -> None:
        self.wait_for(lambda: ping(self.url), deadline, "PING")


class ExternalRedis(ExternalService):
    """A Redis named by `$AISLE_REDIS_URL`, used instead of starting one."""

    def __init__(self, url: str) -> None:
        super().__init__("redis", URL_VARIABLE)
        self.url = url

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ExternalRedis | None:
        """The Redis that `environ` names, if it names one and it answers PING, else None."""
        url = environ.get(URL_VARIABLE, "").strip()
        if not url:
            return None
        if not ping(url, timeout=2.0):
            print(f"${URL_VARIABLE}={url} does not answer PING: ignoring it.", file=sys.stderr)
            return None
        return cls(url)
