"""A single-node Apache Kafka broker in KRaft combined mode, run from jars that Maven fetches.

The jars come from `pom.xml` beside this file: `ensure_kafka_libs()` copies them (and their dependencies) into
the git-ignored `.services/kafka-libs/` once; Maven keeps them in `~/.m2` too, so a wiped cache refills
offline. The broker is `java -cp '.services/kafka-libs/*' kafka.Kafka server.properties`, one process that is
both the controller and the broker (`process.roles=broker,controller`), listening on 127.0.0.1 only.

`AISLE_TOPICS` (from `feature_worker.topics`, where the product keeps them) are the topics Aisle uses; every start
creates them (idempotently). Automatic topic creation is
off, as in production, so a producer that names a wrong topic fails instead of inventing it: a test that wants
a topic of its own creates it with `create_topics`.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from aiokafka.errors import KafkaError

from feature_worker.topics import AISLE_TOPICS, create_topics
from loadtest.harness.services.process import (
    LOOPBACK,
    STATE_ROOT,
    ExternalService,
    ManagedProcess,
    ServiceStartError,
    free_port,
    port_open,
    run_async,
    split_host_port,
)

POM = Path(__file__).with_name("pom.xml")
KAFKA_LIBS = STATE_ROOT / "kafka-libs"
#: Written last into KAFKA_LIBS, holding the hash of the pom the jars came from: present and equal = complete.
_LIBS_STAMP = ".complete"
#: The variable that names a Kafka to use instead of starting one.
BOOTSTRAP_VARIABLE = "AISLE_KAFKA_BOOTSTRAP"
#: Default JVM heap; `KAFKA_HEAP_OPTS`, as in Kafka's own scripts, overrides it.
DEFAULT_HEAP_OPTS = "-Xmx512m -Xms256m"


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def ensure_kafka_libs(libs: Path = KAFKA_LIBS) -> Path:
    """Make `libs` hold the broker's jars, fetching them with Maven unless they are already there.

    Safe to call from several processes at once (a file lock serialises them), and atomic: the jars are
    copied into a temporary folder that is renamed into place, so an interrupted fetch leaves no half cache.
    A changed `pom.xml` (a Kafka upgrade) invalidates the cache. Returns `libs`.
    """
    wanted = _pom_hash()
    stamp = libs / _LIBS_STAMP
    if stamp.is_file() and stamp.read_text() == wanted:
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f"{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted:  # another process fetched them meanwhile
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceStartError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install -y maven")
        print(
            f"Fetching the Kafka jars with Maven into {libs} (first run only) ...",
            file=sys.stderr,
            flush=True,
        )
        staging = libs.with_name(f"{libs.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        started = time.monotonic()
        result = subprocess.run(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            output = (result.stdout + result.stderr)[-4000:]
            raise ServiceStartError(
                f"Maven could not fetch the Kafka jars (exit {result.returncode}):\n{output}"
            )
        (staging / _LIBS_STAMP).write_text(wanted)
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        print(f"Fetched the Kafka jars in {time.monotonic() - started:.1f}s.", file=sys.stderr, flush=True)
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise ServiceStartError(
            "Java 17 or newer is needed to run Kafka: apt-get install -y openjdk-17-jre-headless"
        )
    return java


def _cluster_id() -> str:
    """A random cluster id in Kafka's own format: a UUID as unpadded URL-safe base64.

    Kafka's `Uuid.randomUuid()` never returns one starting with "-", since the CLI would take it for a flag.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


# Log only warnings and the line that says the broker is up: the INFO level writes thousands of lines a start.
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


class KafkaService(ManagedProcess):
    """A KRaft broker+controller on 127.0.0.1 whose config, data and log live in `workdir`.

    `start()` fetches the jars if needed, writes `server.properties`, formats the storage on the first start
    only (so a restart keeps every topic and offset), starts the JVM and returns once the `AISLE_TOPICS` exist
    with leaders and the group coordinator answers, so that a consumer group joins at once.
    """

    name: ClassVar[str] = "kafka"
    start_timeout: ClassVar[float] = 90.0

    @property
    def bootstrap(self) -> str:
        """`"127.0.0.1:PORT"`, for `bootstrap_servers`; valid once started, and across restarts."""
        return f"{LOOPBACK}:{self.ports['port']}"

    def _pick_ports(self) -> dict[str, int]:
        port = free_port()
        controller = free_port()
        while controller == port:
            controller = free_port()
        return {"port": port, "controller": controller}

    def _server_properties(self) -> str:
        port, controller = self.ports["port"], self.ports["controller"]
        return f"""\
# Written by loadtest/harness/services/kafka.py at every start.
process.roles=broker,controller
node.id=1
# A static one-voter quorum: simpler than a dynamic quorum and fine for a node that never changes.
controller.quorum.voters=1@{LOOPBACK}:{controller}
listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller}
advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self.workdir / "data"}
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=false
# One node: every internal topic has one replica, and few partitions so that creating them is quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
# After a crash (kill()) the restarted broker cannot register until the controller expires its old session:
# 3 s instead of the default 9 s keeps chaos tests quick. Heartbeats stay inside one JVM, so 3 s is ample.
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
# Tests start consumers one after another; the default 3 s wait for more members only slows them down.
group.initial.rebalance.delay.ms=0
"""

    def _jvm(self, main_class: str, heap: str) -> list[str]:
        libs = ensure_kafka_libs()
        return [
            _java(),
            *heap.split(),
            "-XX:+ExitOnOutOfMemoryError",  # a broker out of memory should die loudly, not limp on
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main_class,
        ]

    def _prepare(self) -> None:
        (self.workdir / "server.properties").write_text(self._server_properties())
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        if (self.workdir / "data" / "meta.properties").exists():
            return  # formatted by an earlier start: keep the data
        result = subprocess.run(
            [
                *self._jvm("kafka.tools.StorageTool", "-Xmx256m"),
                "format",
                "--cluster-id",
                _cluster_id(),
                "--config",
                str(self.workdir / "server.properties"),
            ],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceStartError(f"Kafka storage format failed:\n{result.stdout}{result.stderr}")

    def _command(self) -> list[str]:
        heap = os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS)
        return [*self._jvm("kafka.Kafka", heap), str(self.workdir / "server.properties")]

    def _wait_ready(self, deadline: float) -> None:
        port = self.ports["port"]
        self.wait_for(lambda: port_open(LOOPBACK, port), deadline, f"port {port}")
        last_error: list[BaseException] = []

        async def ready() -> None:
            # The port opens before the broker has caught up with the metadata log: retry until the topics
            # have leaders and the group coordinator answers, or the deadline passes.
            while True:
                self.check_alive()
                try:
                    await create_topics(
                        self.bootstrap,
                        AISLE_TOPICS,
                        timeout=min(15.0, max(1.0, deadline - time.monotonic())),
                        warm_group_coordinator=True,
                    )
                    return
                except Exception as exc:  # noqa: BLE001 - any client error means "not yet"; the deadline bounds it
                    last_error[:] = [exc]
                if time.monotonic() > deadline:
                    raise ServiceStartError(
                        self.failure_message(f"kafka: not ready in time (last error: {last_error[0]!r})")
                    )
                await asyncio.sleep(0.25)

        run_async(ready)


class ExternalKafka(ExternalService):
    """A Kafka named by `$AISLE_KAFKA_BOOTSTRAP`, used instead of starting one."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__("kafka", BOOTSTRAP_VARIABLE)
        self.bootstrap = bootstrap

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ExternalKafka | None:
        """The Kafka that `environ` names, if it names one and it accepts connections, else None."""
        bootstrap = environ.get(BOOTSTRAP_VARIABLE, "").strip()
        if not bootstrap:
            return None
        host, port = split_host_port(bootstrap)
        if not port_open(host, port, timeout=2.0):
            print(f"${BOOTSTRAP_VARIABLE}={bootstrap} does not answer: ignoring it.", file=sys.stderr)
            return None
        return cls(bootstrap)

    def ensure_topics(self) -> None:
        """Create `AISLE_TOPICS` there too (idempotently), since tests expect them."""
        try:
            run_async(lambda: create_topics(self.bootstrap, AISLE_TOPICS))
        except (KafkaError, TimeoutError) as exc:
            raise ServiceStartError(f"cannot create the Aisle topics on {self.bootstrap}: {exc!r}") from exc
