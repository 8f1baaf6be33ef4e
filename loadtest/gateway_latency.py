"""What the HTTP/JSON gateway adds to a `Recommend`: native gRPC and HTTP/JSON through `server.gateway` to the same
server, measured side by side in alternating blocks so both see the same background load.

    python -m loadtest.gateway_latency --shop DIR [--requests 10000] [--blocks 20]

One embedded server that requires JWTs, loaded with the shop; one gateway before it. Each block makes the same
calls (users drawn with a fixed seed, k=10 with explanations, the same bearer token) once over a gRPC channel and
once as `GET /v1/users/{user}/recommendations?k=10&explain=true` on one kept-alive HTTP/1.1 connection, one call
at a time; every answer must hold 10 items. The HTTP figure includes the JSON encoding and the gateway's own
gRPC hop to the server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import grpc

from clients import tokens
from loadtest.harness.gateway import GatewayProcess
from loadtest.harness.server import ServerProcess
from loadtest.shops import load_shop, loaded
from loadtest.stats import format_ms, summarize_ms
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from trainer.data.generated import read_users

WARMUP = 50


def grpc_block(target: str, users: list[str], token: str) -> list[float]:
    metadata = (("authorization", f"Bearer {token}"),)
    samples = []
    with grpc.insecure_channel(target) as channel:
        call = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
        for n, user in enumerate(users):
            request = recommendations_pb2.RecommendRequest(user_id=user, k=10, explain=True)
            started = time.perf_counter()
            response = call(request, timeout=5, metadata=metadata)
            elapsed = time.perf_counter() - started
            if len(response.items) != 10:
                sys.exit(f"short gRPC answer for {user}")
            if n >= WARMUP:
                samples.append(elapsed)
    return samples


def http_block(port: int, users: list[str], token: str) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for n, user in enumerate(users):
            started = time.perf_counter()
            connection.request(
                "GET", f"/v1/users/{quote(user, safe='')}/recommendations?k=10&explain=true", headers=headers
            )
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200 or len(json.loads(body)["items"]) != 10:
                sys.exit(f"bad HTTP answer for {user}: {response.status} {body[:200]!r}")
            if n >= WARMUP:
                samples.append(elapsed)
    finally:
        connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.gateway_latency")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=10_000, help="calls per side, all blocks together")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    users = [u.user_id for u in read_users(args.shop)]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        key_file, jwks_file = tokens.write_dev_keys(Path(tmp) / "keys")
        key = tokens.load_private_key(key_file)
        server = ServerProcess(
            Path(tmp) / "server", env=tokens.dev_settings(jwks_file), args=["--lists-refresh-s", "1"]
        ).start()
        gateway = GatewayProcess(Path(tmp) / "gateway", server.target).start()
        try:
            print(loaded(load_shop(server.target, args.shop, token=tokens.mint(key, ["admin"]))))
            time.sleep(2)  # let the background refresh build popular/trending lists
            token = tokens.mint(key, ["recommendations:read"], subject="bench-partner")
            native: list[float] = []
            over_http: list[float] = []
            per_block = args.requests // args.blocks
            for n in range(args.blocks):
                drawn = [rng.choice(users) for _ in range(per_block + WARMUP)]
                # alternate which side goes first, so neither always follows the other
                if n % 2 == 0:
                    native += grpc_block(server.target, drawn, token)
                    over_http += http_block(gateway.port, drawn, token)
                else:
                    over_http += http_block(gateway.port, drawn, token)
                    native += grpc_block(server.target, drawn, token)
            grpc_summary, http_summary = summarize_ms(native), summarize_ms(over_http)
            print("native gRPC:       " + format_ms(grpc_summary))
            print("HTTP/JSON gateway: " + format_ms(http_summary))
            print(f"gateway overhead, p50: {http_summary['p50'] - grpc_summary['p50']:+.3f} ms")
        finally:
            gateway.stop()
            server.stop()


if __name__ == "__main__":
    main()
