"""`Recommend` latency over a real channel from one client, one call at a time.

    python -m loadtest.recommend_latency --shop DIR [--requests 10000] [--target HOST:PORT [--metrics URL]] [--auth]

Without --target it starts an embedded server on a free port with its Prometheus metrics on, replays the shop
into it through EventService.Track, then measures. Users are drawn from the shop with a fixed seed; every call
asks for k=10 with explanations, as a product page would.

Beside the client's view (round trip per call) it prints the server's: `/metrics` scraped before and after the
measured calls gives the Recommend handler's and each stage's mean and p50/p99 (estimated from the histogram
buckets, `loadtest.server_metrics`) and the server's CPU per call. With --target, pass --metrics to get it.

With --auth the server requires JWTs (a throwaway key, `clients.tokens`) and every call sends the same bearer
token, as a partner reusing its access token does: run it with and without to see what authentication adds.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc

from clients import tokens
from loadtest.harness.cpus import HELP, client_cpus
from loadtest.harness.server import ServerProcess, free_port
from loadtest.server_metrics import breakdown, scrape
from loadtest.shops import load_shop, loaded
from loadtest.stats import format_ms, summarize_ms
from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.affinity import pin_process
from trainer.data.generated import read_users


def measure(
    target: str,
    users: list[str],
    requests: int,
    seed: int,
    metrics_url: str | None = None,
    warmup: int = 500,
    token: str | None = None,
) -> str:
    """The client's summary, and the server's breakdown of the same calls when `metrics_url` is given."""
    rng = random.Random(seed)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    before = None
    with grpc.insecure_channel(target) as channel:
        stub = recommendations_pb2_grpc.RecommendationServiceStub(channel)
        call = stub.Recommend
        samples = []
        for n in range(warmup + requests):
            request = recommendations_pb2.RecommendRequest(user_id=rng.choice(users), k=10, explain=True)
            started = time.perf_counter()
            response = call(request, timeout=5, metadata=metadata)
            elapsed = time.perf_counter() - started
            if len(response.items) != 10:
                sys.exit(f"short answer for {request.user_id}: {len(response.items)} items")
            if n >= warmup:
                samples.append(elapsed)
            if n + 1 == warmup and metrics_url:
                before = scrape(metrics_url)
    report = "client round trip: " + format_ms(summarize_ms(samples))
    if metrics_url and before is not None:
        report += "\n\n" + breakdown(before, scrape(metrics_url))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.recommend_latency")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--target", help="an already loaded server; default: start and load one")
    parser.add_argument("--metrics", help="that server's /metrics URL, for the server-side breakdown")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bundles", type=Path, help="serve the bundle promoted in this directory (learned retrieval)"
    )
    parser.add_argument("--auth", action="store_true", help="require JWTs and send one with every call")
    parser.add_argument("--token", help="with --target: the bearer token to send")
    parser.add_argument("--client-cpus", help=HELP)
    parser.add_argument("--server-cpus", help="without --target: the server's --cpus (default: any)")
    args = parser.parse_args()
    cpus = client_cpus(args.client_cpus, parser)
    users = [u.user_id for u in read_users(args.shop)]
    if args.target:
        pin_process(cpus)
        print(measure(args.target, users, args.requests, args.seed, args.metrics, token=args.token))
        return
    with tempfile.TemporaryDirectory() as tmp:
        # lists refresh every second in the background, as in production
        bundle_args = ["--bundles", str(args.bundles.resolve())] if args.bundles else []
        cpu_args = ["--cpus", args.server_cpus] if args.server_cpus else []
        env: dict[str, str] = {}
        admin = reader = None
        if args.auth:
            key_file, jwks_file = tokens.write_dev_keys(Path(tmp) / "keys")
            env = tokens.dev_settings(jwks_file)
            key = tokens.load_private_key(key_file)
            admin = tokens.mint(key, ["admin"])
            reader = tokens.mint(key, ["recommendations:read"], subject="bench-partner")
        server = ServerProcess(
            Path(tmp) / "server",
            env=env,
            metrics_port=free_port(),
            args=["--lists-refresh-s", "1", *bundle_args, *cpu_args],
        ).start()
        try:
            print(loaded(load_shop(server.target, args.shop, token=admin or "")))
            time.sleep(2)  # let the background refresh build popular/trending lists
            pin_process(cpus)  # only now: the server started above would have inherited the client's CPUs
            print(measure(server.target, users, args.requests, args.seed, server.metrics_url, token=reader))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
