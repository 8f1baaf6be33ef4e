"""A JWT-protected server and an HTTP/JSON gateway before it, shared by the gateway's test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients.client import AisleClient, ClientOptions
from clients.tokens import PrivateKey, generate_key, mint
from loadtest.harness.gateway import GatewayProcess
from loadtest.harness.server import ServerProcess
from tests.auth_keys import jwt_server

#: The one browser origin the gateway of these tests allows.
ALLOWED_ORIGIN = "http://shop.test"


@pytest.fixture(scope="package")
def key() -> PrivateKey:
    return generate_key("RS256")


@pytest.fixture(scope="package")
def auth_server(key: PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = jwt_server(tmp_path_factory.mktemp("gateway-backend"), key)
    yield process
    process.stop()


@pytest.fixture(scope="package")
def gateway(auth_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        tmp_path_factory.mktemp("gateway"), auth_server.target, args=["--cors-origin", ALLOWED_ORIGIN]
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="package")
def admin(key: PrivateKey, auth_server: ServerProcess) -> Iterator[AisleClient]:
    """A gRPC client with every scope, to set up and check the server's state."""
    options = ClientOptions(target=auth_server.target, token=mint(key, ["admin"]), read_timeout_s=10)
    with AisleClient(options) as client:
        yield client
