"""Pytest plugin: session fixtures that run a real Kafka broker and a real Redis server for the test run.

Register it from `tests/conftest.py` with `pytest_plugins = ["tests.services.fixtures"]`.

- `kafka_service` / `redis_service`: the servers, started lazily by the first test that asks, in temp dirs
  on free ports, and stopped when the session ends, however it ends (see `ManagedProcess`: finalizers cover
  failures and Ctrl-C, and the kernel kills them if pytest itself is killed). Chaos tests call `.stop()`,
  `.start()`, `.kill()` or `.restart()`: the server comes back on the same port with the same data (Kafka
  keeps its topics and offsets; Redis, with persistence off, comes back empty). When `AISLE_KAFKA_BOOTSTRAP`
  / `AISLE_REDIS_URL` name reachable servers those are used instead and `.managed` is False: such tests
  skip.
- `redis_cluster_service`: a Redis Cluster of three primaries (`RedisClusterService`), started by the first
  test that asks; `redis_cluster_url` names its first node (clients find the others). A Cluster has one
  database: a test that needs it empty calls `.flush()` and must not rely on keys of earlier tests.
- `kafka_bootstrap` -> `"127.0.0.1:PORT"`, `redis_url` -> `"redis://127.0.0.1:PORT/0"`.

Both are session-wide and shared: a test that needs isolation uses its own topic names, consumer group ids
and Redis key prefixes, and a test that restarts a server waits for it to come back (`restart()` does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from loadtest.harness.services.kafka import ExternalKafka, KafkaService
from loadtest.harness.services.redis import ExternalRedis, RedisClusterService, RedisService


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService | ExternalKafka]:
    """The session's Kafka broker, with `AISLE_TOPICS` created."""
    external = ExternalKafka.from_env(os.environ)
    if external is not None:
        external.ensure_topics()
        yield external
        return
    service = KafkaService(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService | ExternalRedis]:
    """The session's Redis server."""
    external = ExternalRedis.from_env(os.environ)
    if external is not None:
        yield external
        return
    service = RedisService(tmp_path_factory.mktemp("redis"), die_with_parent=True)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_cluster_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterService]:
    """The session's Redis Cluster (three primaries)."""
    service = RedisClusterService(tmp_path_factory.mktemp("redis-cluster"), die_with_parent=True)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster_service: RedisClusterService) -> str:
    """`"redis://127.0.0.1:PORT/0"` of the session's Redis Cluster's first node."""
    return redis_cluster_service.url


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService | ExternalKafka) -> str:
    """`"127.0.0.1:PORT"` of the session's Kafka broker, for `bootstrap_servers`."""
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def redis_url(redis_service: RedisService | ExternalRedis) -> str:
    """`"redis://127.0.0.1:PORT/0"` of the session's Redis server."""
    return redis_service.url
