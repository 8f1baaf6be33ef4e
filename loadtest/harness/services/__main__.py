"""`python -m loadtest.harness.services up|down|status`: Kafka and Redis for development (`make services`).

`up` starts both in the background under `.services/` (they outlive the command), writes their addresses to
`.services.env` (`source .services.env` or an env file for the server and worker) and prints them; running it
again while they run changes nothing. `down` stops them, deletes their data and removes `.services.env`.
`status` says what runs and exits 1 if something does not. `up --cluster` (`make services CLUSTER=1`) starts a
Redis Cluster of three primaries instead of one Redis (`AISLE_REDIS_URL` names its first node). A server named by a reachable
`AISLE_KAFKA_BOOTSTRAP` / `AISLE_REDIS_URL` is used as is and never started or stopped here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from loadtest.harness.services.kafka import BOOTSTRAP_VARIABLE, ExternalKafka, KafkaService
from loadtest.harness.services.process import (
    REPO_ROOT,
    STATE_ROOT,
    ExternalService,
    ManagedProcess,
    ServiceError,
)
from loadtest.harness.services.redis import URL_VARIABLE, ExternalRedis, RedisClusterService, RedisService

ENV_FILE = REPO_ROOT / ".services.env"


def _kafka() -> KafkaService:
    return KafkaService(STATE_ROOT / "kafka", die_with_parent=False)


def _redis() -> RedisService:
    return RedisService(STATE_ROOT / "redis", die_with_parent=False)


def _redis_cluster() -> RedisClusterService:
    return RedisClusterService(STATE_ROOT / "redis-cluster", die_with_parent=False)


def _start(service: ManagedProcess | RedisClusterService) -> bool:
    """Start `service` unless it already runs; returns whether this call started it.

    A workdir left by a server that died (or a machine that rebooted) is wiped first: a fresh start on fresh
    ports is more predictable than reviving old data on ports that may be taken now.
    """
    if service.is_running():
        print(f"{service.name}: already running (pid {service.pid})")
        return False
    service.wipe()
    started = time.monotonic()
    service.start()
    elapsed = time.monotonic() - started
    print(f"{service.name}: started in {elapsed:.1f}s (pid {service.pid}, log {service.log_path})")
    return True


def up(cluster: bool = False) -> int:
    """Start what is not running yet, write `.services.env` and print the addresses."""
    kafka_bootstrap: str
    redis_url: str
    started: list[ManagedProcess | RedisClusterService] = []
    try:
        external_kafka = ExternalKafka.from_env(os.environ)
        if external_kafka is not None:
            external_kafka.ensure_topics()
            print(f"kafka: using ${BOOTSTRAP_VARIABLE}")
            kafka_bootstrap = external_kafka.bootstrap
        else:
            kafka = _kafka()
            if _start(kafka):
                started.append(kafka)
            kafka_bootstrap = kafka.bootstrap
        external_redis = ExternalRedis.from_env(os.environ)
        if external_redis is not None:
            print(f"redis: using ${URL_VARIABLE}")
            redis_url = external_redis.url
        else:
            redis = _redis_cluster() if cluster else _redis()
            if _start(redis):
                started.append(redis)
            redis_url = redis.url
    except BaseException as exc:
        # Leave nothing half up, also on Ctrl-C: stop what this call started, so `up` can simply be rerun.
        for service in started:
            service.stop()
        if isinstance(exc, ServiceError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    for service in started:
        service.detach()
    lines = [f"{BOOTSTRAP_VARIABLE}={kafka_bootstrap}", f"{URL_VARIABLE}={redis_url}"]
    ENV_FILE.write_text(
        "# Written by `python -m loadtest.harness.services up`, removed by `down`.\n"
        + "".join(f"{line}\n" for line in lines)
    )
    print(f"wrote {ENV_FILE.name}:")
    for line in lines:
        print(f"  {line}")
    return 0


def down() -> int:
    """Stop what `up` started, delete its data and remove `.services.env`."""
    for service in (_kafka(), _redis(), _redis_cluster()):
        pid = service.pid
        service.wipe()
        if pid is not None:
            print(f"{service.name}: stopped (pid {pid})")
    ENV_FILE.unlink(missing_ok=True)
    return 0


def status() -> int:
    """Print what runs; exit 1 unless both services are available."""
    kafka, redis, cluster = _kafka(), _redis(), _redis_cluster()
    if cluster.is_running():
        redis = cluster  # type: ignore[assignment]
    available = [
        _report(kafka, kafka.bootstrap if kafka.ports else "", ExternalKafka.from_env(os.environ)),
        _report(redis, redis.url if redis.ports else "", ExternalRedis.from_env(os.environ)),
    ]
    if ENV_FILE.exists():
        print(f"{ENV_FILE.name}: present")
    return 0 if all(available) else 1


def _report(
    service: ManagedProcess | RedisClusterService, address: str, external: ExternalService | None
) -> bool:
    if service.is_running():
        print(f"{service.name}: running, pid {service.pid}, {address}, log {service.log_path}")
    elif external is not None:
        print(f"{service.name}: using ${external.variable}")
    else:
        print(f"{service.name}: not running")
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.harness.services", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--cluster", action="store_true", help="up: a Redis Cluster of three primaries")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(cluster=args.cluster)
    return {"down": down, "status": status}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
