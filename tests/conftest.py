"""Shared fixtures: a real server process and real clients over real channels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.client import AisleClient, ClientOptions
from server.process import ServerProcess

pytest_plugins = ["tests.services.fixtures"]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One embedded server for the session; tests keep apart by using unique ids (`tests.shop`)."""
    process = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield process
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[AisleClient]:
    with AisleClient(ClientOptions(target=server.target, read_timeout_s=10, write_timeout_s=30)) as c:
        yield c


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that restart it or need an empty shop."""
    process = ServerProcess(tmp_path / "server").start()
    yield process
    process.stop()
