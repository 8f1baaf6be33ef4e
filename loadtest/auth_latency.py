"""What JWT authentication adds to a `Recommend` over a real channel: an open server and one that requires
tokens, loaded with the same shop and measured in alternating blocks, so that both see the same noise.

    python -m loadtest.auth_latency --shop DIR [--requests 10000] [--blocks 20]

The authenticated server gets the same bearer token on every call (a partner reusing its access token), so
after the first call its check is the interceptor plus the cache of verified tokens; `loadtest.auth_verify`
measures that part alone, in process.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import grpc

from clients import tokens
from loadtest.harness.server import ServerProcess
from loadtest.shops import load_shop
from loadtest.stats import format_ms, summarize_ms
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from trainer.data.generated import read_users


def block(target: str, users: list[str], calls: int, rng: random.Random, token: str | None) -> list[float]:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    samples = []
    with grpc.insecure_channel(target) as channel:
        call = recommendations_pb2_grpc.RecommendationServiceStub(channel).Recommend
        for n in range(calls + 50):  # the first 50 warm the new connection up
            request = recommendations_pb2.RecommendRequest(user_id=rng.choice(users), k=10, explain=True)
            started = time.perf_counter()
            call(request, timeout=5, metadata=metadata)
            if n >= 50:
                samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.auth_latency")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=10_000, help="per server")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    users = [u.user_id for u in read_users(args.shop)]
    with tempfile.TemporaryDirectory() as tmp:
        key_file, jwks_file = tokens.write_dev_keys(Path(tmp) / "keys")
        key = tokens.load_private_key(key_file)
        admin, reader = (
            tokens.mint(key, ["admin"]),
            tokens.mint(key, ["recommendations:read"], subject="bench"),
        )
        refresh = ["--lists-refresh-s", "1"]
        open_server = ServerProcess(Path(tmp) / "open", args=refresh).start()
        auth_server = ServerProcess(
            Path(tmp) / "auth", env=tokens.dev_settings(jwks_file), args=refresh
        ).start()
        try:
            for server in (open_server, auth_server):
                load_shop(server.target, args.shop, token=admin)
            time.sleep(2)  # let the background refresh build popular/trending lists
            rng = random.Random(args.seed)
            per_block = max(1, args.requests // args.blocks)
            samples: dict[str, list[float]] = {"open": [], "auth": []}
            for _ in range(args.blocks):
                samples["open"] += block(open_server.target, users, per_block, rng, None)
                samples["auth"] += block(auth_server.target, users, per_block, rng, reader)
            results = {name: summarize_ms(values) for name, values in samples.items()}
            for name, result in results.items():
                print(f"{name:<5} {format_ms(result)}")
            added = {q: (results["auth"][q] - results["open"][q]) * 1000 for q in ("p50", "p90")}
            print(f"added by auth: p50 {added['p50']:+.0f} µs, p90 {added['p90']:+.0f} µs")
        finally:
            open_server.stop()
            auth_server.stop()


if __name__ == "__main__":
    main()
