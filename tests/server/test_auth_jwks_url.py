"""Keys from an issuer's JWKS URL: a real https endpoint (in this process, with a certificate made for the run)
that the server fetches from, trusting the run's CA through SSL_CERT_FILE."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.certs import write_dev_certs
from clients.tokens import PrivateKey, jwks
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import recommendations_pb2
from tests.auth_keys import AUDIENCE, ISSUER, generate_key, mint
from tests.statuses import bearer, status_of

REQUEST = recommendations_pb2.RecommendRequest(user_id="u1", k=3).SerializeToString()


class Issuer:
    """An https server publishing a JWKS at /jwks.json; `keys` can be changed, `fetches` counts requests."""

    def __init__(self, directory: Path) -> None:
        self.certs = write_dev_certs(directory)
        self.keys: list[PrivateKey] = []
        self.fetches = 0
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(jwks(issuer.keys)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.certs.server_cert), str(self.certs.server_key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.httpd.server_address[1]}/jwks.json"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "AISLE_AUTH_JWKS_URL": self.url,
            "AISLE_AUTH_ISSUER": ISSUER,
            "AISLE_AUTH_AUDIENCE": AUDIENCE,
            "SSL_CERT_FILE": str(self.certs.ca),
            **extra,
        }

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    running = Issuer(tmp_path / "issuer")
    yield running
    running.stop()


def status(server: ServerProcess, key: PrivateKey) -> grpc.StatusCode:
    """The status of a Recommend with an admin token signed by `key`."""
    with server.channel() as channel:
        return status_of(
            channel, "/aisle.v1.RecommendationService/Recommend", REQUEST, bearer(mint(key, ["admin"])), 20
        )


def test_rotation_through_the_url_and_the_last_good_keys_kept(issuer: Issuer, tmp_path: Path) -> None:
    first, second, third = generate_key("RS256"), generate_key("EdDSA"), generate_key("ES256")
    issuer.keys = [first]
    server = ServerProcess(tmp_path / "server", env=issuer.env(AISLE_AUTH_JWKS_MIN_REFRESH_S="0")).start()
    try:
        assert status(server, first) == grpc.StatusCode.OK
        issuer.keys = [first, second]
        assert status(server, second) == grpc.StatusCode.OK  # unknown kid: fetched again
        issuer.stop()  # the issuer goes away: the keys already fetched keep working
        assert status(server, third) == grpc.StatusCode.UNAUTHENTICATED
        assert status(server, first) == grpc.StatusCode.OK
        assert status(server, second) == grpc.StatusCode.OK
        assert "keeping the last good key set" in server.log_tail(200)
    finally:
        server.stop()


def test_unknown_kids_refetch_at_most_once_per_interval(issuer: Issuer, tmp_path: Path) -> None:
    first, second = generate_key("RS256"), generate_key("RS256")
    issuer.keys = [first]
    server = ServerProcess(tmp_path / "server", env=issuer.env(AISLE_AUTH_JWKS_MIN_REFRESH_S="3600")).start()
    try:
        assert issuer.fetches == 1
        issuer.keys = [first, second]
        for _ in range(5):  # a flood of unknown kids does not become a flood of fetches
            assert status(server, second) == grpc.StatusCode.UNAUTHENTICATED
        assert issuer.fetches == 1
        assert status(server, first) == grpc.StatusCode.OK
    finally:
        server.stop()


def test_an_unreachable_url_at_start_up_refuses_to_start(issuer: Issuer, tmp_path: Path) -> None:
    env = issuer.env()
    issuer.stop()
    process = ServerProcess(tmp_path / "server", env=env)
    with pytest.raises(RuntimeError, match="did not start"):
        process.start(timeout_s=60)
    process.stop()
    assert "cannot fetch the JWKS" in process.log_tail()
