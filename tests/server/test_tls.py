"""TLS on the server's own port, and the nginx front that enforces TLS 1.3 (and mutual TLS) before it.

Certificates are made for each run (`clients.certs`, the cryptography package); none is committed.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.certs import CertFiles, write_dev_certs
from clients.client import AisleClient, ClientOptions
from clients.tokens import PrivateKey
from loadtest.harness.server import ServerProcess
from loadtest.harness.services.nginx import NginxFront
from protos.aisle.v1 import recommendations_pb2
from tests.auth_keys import mint
from tests.statuses import bearer, status_of

RECOMMEND = "/aisle.v1.RecommendationService/Recommend"
REQUEST = recommendations_pb2.RecommendRequest(user_id="u1", k=3).SerializeToString()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return write_dev_certs(tmp_path_factory.mktemp("certs"))


def tls_credentials(certs: CertFiles, client_cert: bool = False) -> grpc.ChannelCredentials:
    if client_cert:
        return grpc.ssl_channel_credentials(
            certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
        )
    return grpc.ssl_channel_credentials(certs.ca.read_bytes())


# -- TLS on the server's own port ------------------------------------------------------------------------


def test_the_server_serves_tls_only(certs: CertFiles, tmp_path: Path) -> None:
    env = {"AISLE_TLS_CERT_FILE": str(certs.server_cert), "AISLE_TLS_KEY_FILE": str(certs.server_key)}
    server = ServerProcess(tmp_path / "server", env=env, credentials=tls_credentials(certs)).start()
    try:
        options = ClientOptions(
            target=server.target, root_certificates=certs.ca.read_bytes(), read_timeout_s=10
        )
        with AisleClient(options) as client:
            assert len(client.recommend("u1", 3).items) == 0  # an empty shop answers, over TLS
        with grpc.insecure_channel(server.target) as plaintext:
            assert status_of(plaintext, RECOMMEND, REQUEST) == grpc.StatusCode.UNAVAILABLE
        assert "(embedded" in server.log_tail() and "; TLS, auth: OFF" in server.log_tail()
    finally:
        server.stop()


def test_mutual_tls_refuses_a_client_without_a_certificate(certs: CertFiles, tmp_path: Path) -> None:
    env = {
        "AISLE_TLS_CERT_FILE": str(certs.server_cert),
        "AISLE_TLS_KEY_FILE": str(certs.server_key),
        "AISLE_TLS_CLIENT_CA_FILE": str(certs.ca),
    }
    server = ServerProcess(tmp_path / "server", env=env, credentials=tls_credentials(certs, client_cert=True))
    server.start()
    try:
        with grpc.secure_channel(server.target, tls_credentials(certs)) as anonymous:
            assert status_of(anonymous, RECOMMEND, REQUEST) == grpc.StatusCode.UNAVAILABLE
        options = ClientOptions(
            target=server.target,
            root_certificates=certs.ca.read_bytes(),
            certificate_chain=certs.client_cert.read_bytes(),
            private_key=certs.client_key.read_bytes(),
            read_timeout_s=10,
        )
        with AisleClient(options) as client:
            assert client.recommend("u1", 3).recommendation_id
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["cert without key", "client CA without cert", "missing file"])
def test_tls_settings_that_cannot_work_refuse_to_start(case: str, certs: CertFiles, tmp_path: Path) -> None:
    env = {
        "cert without key": {"AISLE_TLS_CERT_FILE": str(certs.server_cert)},
        "client CA without cert": {"AISLE_TLS_CLIENT_CA_FILE": str(certs.ca)},
        "missing file": {
            "AISLE_TLS_CERT_FILE": str(tmp_path / "nope.pem"),
            "AISLE_TLS_KEY_FILE": str(certs.server_key),
        },
    }[case]
    process = ServerProcess(tmp_path / "server", env=env)
    with pytest.raises(RuntimeError, match="did not start"):
        process.start(timeout_s=60)
    process.stop()
    assert "python -m server:" in process.log_tail()


# -- the nginx front ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def front(
    auth_server: ServerProcess, certs: CertFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxFront]:
    """TLS 1.3 in front of `auth_server` (plaintext, on loopback, auth on): it must pass the token through."""
    nginx = NginxFront(
        tmp_path_factory.mktemp("front"), auth_server.target, certs.server_cert, certs.server_key
    )
    nginx.start()
    yield nginx
    nginx.stop()


@pytest.fixture(scope="module")
def mtls_front(
    auth_server: ServerProcess,
    certs: CertFiles,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NginxFront]:
    nginx = NginxFront(
        tmp_path_factory.mktemp("mtls-front"),
        auth_server.target,
        certs.server_cert,
        certs.server_key,
        client_ca=certs.ca,
    )
    nginx.start()
    yield nginx
    nginx.stop()


def handshake(port: int, certs: CertFiles, version: ssl.TLSVersion, client_cert: bool = False) -> str:
    """The TLS version negotiated with a client that offers exactly `version`; raises ssl.SSLError if refused."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.minimum_version = context.maximum_version = version
    context.set_alpn_protocols(["h2"])
    if client_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version())


def test_the_front_serves_tls_1_3(front: NginxFront, certs: CertFiles, key: PrivateKey) -> None:
    assert handshake(front.port, certs, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with grpc.secure_channel(front.target, tls_credentials(certs)) as channel:
        # types-grpcio-health-checking's HealthStub declares no methods.
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
        health = check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        token = mint(key, ["recommendations:read"])
        assert status_of(channel, RECOMMEND, REQUEST, bearer(token)) == grpc.StatusCode.OK
        # The server's answer, through nginx.
        assert status_of(channel, RECOMMEND, REQUEST) == grpc.StatusCode.UNAUTHENTICATED


def test_the_front_refuses_tls_1_2(front: NginxFront, certs: CertFiles) -> None:
    with pytest.raises(ssl.SSLError, match="(?i)protocol version|alert"):
        handshake(front.port, certs, ssl.TLSVersion.TLSv1_2)


def test_the_mtls_front_refuses_a_client_without_a_certificate(
    mtls_front: NginxFront, certs: CertFiles, key: PrivateKey
) -> None:
    token = bearer(mint(key, ["recommendations:read"]))
    with grpc.secure_channel(mtls_front.target, tls_credentials(certs)) as anonymous:
        assert status_of(anonymous, RECOMMEND, REQUEST, token) == grpc.StatusCode.UNAUTHENTICATED
    with grpc.secure_channel(mtls_front.target, tls_credentials(certs, client_cert=True)) as known:
        assert status_of(known, RECOMMEND, REQUEST, token) == grpc.StatusCode.OK
    assert handshake(mtls_front.port, certs, ssl.TLSVersion.TLSv1_3, client_cert=True) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(mtls_front.port, certs, ssl.TLSVersion.TLSv1_2, client_cert=True)
