"""Shared fixtures: a real server process and real clients over real channels.

`server` is embedded unless a module asks for both modes with
`pytestmark = pytest.mark.parametrize("server_mode", SERVER_MODES, indirect=True)`: then each of its
tests runs against the embedded server and against a Kafka + Redis stack (a feature worker and a
server process on the session's real broker and Redis, see `tests.kafka_stack`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.client import AisleClient, ClientOptions
from clients.tokens import PrivateKey
from loadtest.harness.server import ServerProcess
from tests.auth_keys import generate_key, jwt_server
from tests.kafka_stack import AppliedClient, KafkaStack

pytest_plugins = ["tests.services.fixtures"]


@pytest.fixture(scope="session")
def server_mode(request: pytest.FixtureRequest) -> str:
    """`embedded` (the default), `kafka` or `kafka-cluster`, when a module parametrizes it (`tests.modes.SERVER_MODES`)."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture(scope="session")
def kafka_stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str
) -> Iterator[KafkaStack]:
    """One feature worker and one Kafka-mode server for the session; tests keep apart by unique ids."""
    stack = KafkaStack(tmp_path_factory.mktemp("kafka-stack"), kafka_bootstrap, redis_url).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def kafka_cluster_stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_cluster_url: str
) -> Iterator[KafkaStack]:
    """As `kafka_stack`, on the session's Redis Cluster."""
    stack = KafkaStack(
        tmp_path_factory.mktemp("kafka-cluster-stack"), kafka_bootstrap, redis_cluster_url
    ).start()
    yield stack
    stack.stop()


def _stack_of(server_mode: str, request: pytest.FixtureRequest) -> KafkaStack:
    name = "kafka_cluster_stack" if server_mode == "kafka-cluster" else "kafka_stack"
    stack: KafkaStack = request.getfixturevalue(name)
    return stack


@pytest.fixture(scope="session")
def server(
    server_mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for the session and mode; tests keep apart by using unique ids (`tests.shop`)."""
    if server_mode != "embedded":
        yield _stack_of(server_mode, request).server
        return
    process = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess, server_mode: str, request: pytest.FixtureRequest) -> Iterator[AisleClient]:
    """A client of `server`; in Kafka mode its `track` returns once the worker has folded the events."""
    options = ClientOptions(target=server.target, read_timeout_s=10, write_timeout_s=30)
    if server_mode != "embedded":
        with AppliedClient(options, _stack_of(server_mode, request)) as c:
            yield c
        return
    with AisleClient(options) as c:
        yield c


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that restart it or need an empty shop."""
    process = ServerProcess(tmp_path / "server").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    """The module's token signing key, the one `auth_server` trusts."""
    return generate_key("RS256")


@pytest.fixture(scope="module")
def auth_server(key: PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of the module's own with auth on (plaintext, on loopback): it requires tokens signed by
    `key`."""
    process = jwt_server(tmp_path_factory.mktemp("auth-server"), key)
    yield process
    process.stop()
