"""A Kafka + Redis deployment for tests: a feature worker and a server process on the session's broker
and Redis, each stack with topics, a consumer group and a Redis database of its own.

Events become visible once the worker has folded them, so the stack offers a deterministic wait:
`wait_applied()` returns once the worker's group has committed every offset that the event topic held
when it was called (the worker commits only after Redis holds the batch). `AppliedClient` calls it
after each Track, which lets the behavioural suite run unchanged against this mode.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from clients.client import AisleClient, ClientOptions
from feature_worker.lag import LagProbe
from feature_worker.topics import Topics
from loadtest.harness.server import ServerProcess
from loadtest.harness.worker import WorkerProcess
from protos.aisle.v1 import events_pb2

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread, for async clients used from synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="aisle-test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def stack_env(bootstrap: str, redis_url: str, prefix: str, group: str, **extra: str) -> dict[str, str]:
    """The AISLE_* environment of a server or worker of one stack."""
    return {
        "AISLE_KAFKA_BOOTSTRAP": bootstrap,
        "AISLE_REDIS_URL": redis_url,
        "AISLE_TOPIC_PREFIX": prefix,
        "AISLE_GROUP_ID": group,
        "AISLE_LOG_EVERY_S": "5",
        **extra,
    }


class KafkaStack:
    """One worker and one server on their own topics, group and Redis database."""

    def __init__(self, workdir: Path, bootstrap: str, redis_url: str, **extra_env: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.topics = Topics(f"test{tag}")
        self.group = f"workers-{tag}"
        self.env = stack_env(bootstrap, redis_url, self.topics.prefix, self.group, **extra_env)
        self.worker = WorkerProcess(workdir / "worker", env=self.env)
        self.server = ServerProcess(workdir / "server", env=self.env)
        self._loop = LoopThread()
        self._probe = LagProbe(bootstrap, self.group, self.topics.events)

    def start(self) -> KafkaStack:
        # The server creates the topics, so it goes first; the worker then joins the group.
        self.server.start()
        self.worker.start()
        self._loop.run(self._probe.start())
        return self

    def wait_applied(self, timeout_s: float = 60.0) -> None:
        """Return once the worker has folded and committed everything produced so far."""
        try:
            self._loop.run(self._probe.wait_caught_up(timeout_s), timeout_s + 10)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{self.worker.log_tail()}") from exc

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()
        try:
            self._loop.run(self._probe.close(), 30)
        finally:
            self._loop.close()


class AppliedClient(AisleClient):
    """A client whose `track` returns once the stack's worker has folded what it sent."""

    def __init__(self, options: ClientOptions, stack: KafkaStack) -> None:
        super().__init__(options)
        self.stack = stack

    def track(self, events: Iterable[events_pb2.Event]) -> events_pb2.TrackResponse:
        response = super().track(events)
        self.stack.wait_applied()
        return response
