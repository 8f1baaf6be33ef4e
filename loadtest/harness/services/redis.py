"""A Redis server (or a Redis Cluster of three) from Debian's `redis-server` package, with persistence off,
on 127.0.0.1.

`ensure_redis_server()` installs the package with apt-get when the binary is missing, since CI machines are
fresh Debian. Persistence is off (`--save ''`, `--appendonly no`), so a restart starts empty: that is what a
"Redis restarted" chaos test wants, and it keeps tests from seeing a previous run's keys.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import ClassVar

import redis

from loadtest.harness.services.apt import ensure_package
from loadtest.harness.services.process import (
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

    def __init__(
        self, workdir: Path, *, die_with_parent: bool = True, appendonly: bool = False, cluster: bool = False
    ) -> None:
        """With `appendonly`, every write is logged and fsynced before Redis answers (`appendfsync always`),
        so a restart, even after a kill, comes back with every acknowledged write: Aisle's production setting.
        With `cluster`, a node in cluster mode (its cluster bus on a port of its own; see `RedisClusterService`)."""
        super().__init__(workdir, die_with_parent=die_with_parent)
        self.appendonly = appendonly
        self.cluster = cluster

    @property
    def url(self) -> str:
        """`"redis://127.0.0.1:PORT/0"`; valid once started, and across restarts."""
        return f"redis://{LOOPBACK}:{self.ports['port']}/0"

    def _pick_ports(self) -> dict[str, int]:
        if self.cluster:
            return {"port": free_port(), "bus": free_port()}
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
            *(
                ["--appendonly", "yes", "--appendfsync", "always"]
                if self.appendonly
                else ["--appendonly", "no"]
            ),
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            "",  # stdout, which ManagedProcess sends to redis.log
            *(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(self.ports["bus"]),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ]
                if self.cluster
                else []
            ),
        ]

    def _wait_ready(self, deadline: float) -> None:
        self.wait_for(lambda: ping(self.url), deadline, "PING")


class RedisClusterService:
    """A Redis Cluster of three primaries (no replicas) on 127.0.0.1, each a `RedisService` under `workdir`.

    The first start assigns the 16,384 slots in three ranges and introduces the nodes to each other (what
    `redis-cli --cluster create` does); each node keeps that in its `nodes.conf`, so a restart comes back as
    the same cluster (empty: persistence is off). `url` names the first node: clients find the others.
    """

    name = "redis-cluster"
    managed = True
    nodes_count = 3

    def __init__(self, workdir: Path, *, die_with_parent: bool = True) -> None:
        self.workdir = workdir
        self.nodes = [
            RedisService(workdir / f"node{i}", die_with_parent=die_with_parent, cluster=True)
            for i in range(self.nodes_count)
        ]

    @property
    def url(self) -> str:
        """`"redis://127.0.0.1:PORT/0"` of the first node; valid once started, and across restarts."""
        return self.nodes[0].url

    @property
    def pid(self) -> int | None:
        """The first node's pid while it runs."""
        return self.nodes[0].pid

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path

    @property
    def ports(self) -> dict[str, int]:
        return self.nodes[0].ports

    def is_running(self) -> bool:
        return all(node.is_running() for node in self.nodes)

    def start(self) -> None:
        """Start the nodes; on the first start, form the cluster. Returns once every slot is served."""
        first = not (self.nodes[0].workdir / "nodes.conf").exists()
        for node in self.nodes:
            node.start()
        if first:
            self._form()
        self._wait_ok(time.monotonic() + 60.0)

    def _form(self) -> None:
        slots = 16384
        step = -(-slots // len(self.nodes))
        clients = [redis.Redis.from_url(node.url) for node in self.nodes]
        try:
            for i, client in enumerate(clients):
                execute: Callable[..., object] = client.execute_command  # redis-py leaves it untyped
                execute("CLUSTER", "ADDSLOTSRANGE", i * step, min(slots, (i + 1) * step) - 1)
                execute("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            meet: Callable[..., object] = clients[0].execute_command
            for node in self.nodes[1:]:
                meet("CLUSTER", "MEET", LOOPBACK, node.ports["port"], node.ports["bus"])
        finally:
            for client in clients:
                client.close()

    def _wait_ok(self, deadline: float) -> None:
        for node in self.nodes:
            node.wait_for(partial(_cluster_ok, node.url, len(self.nodes)), deadline, "cluster_state:ok")

    def stop(self, timeout: float | None = None) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def wipe(self) -> None:
        for node in self.nodes:
            node.wipe()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def detach(self) -> None:
        for node in self.nodes:
            node.detach()

    def flush(self) -> None:
        """Delete every key on every node."""
        for node in self.nodes:
            with redis.Redis.from_url(node.url) as client:
                client.flushall()


def flush(url: str) -> None:
    """Empty the Redis database `url` names, or every node of the Redis Cluster it belongs to."""
    with redis.Redis.from_url(url) as client:
        if not client.info("cluster").get("cluster_enabled"):
            client.flushdb()
            return
        nodes = client.execute_command("CLUSTER", "NODES")
    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    for line in text.splitlines():
        address = line.split()[1].split("@")[0]
        with redis.Redis.from_url(f"redis://{address}/0") as node:
            node.flushall()


def _cluster_ok(url: str, nodes: int) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0) as client:
            info = client.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)


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
