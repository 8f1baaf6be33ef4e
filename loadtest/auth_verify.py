"""What checking a bearer token costs the server, in process, per call (no network).

    python -m loadtest.auth_verify [--calls 20000]

For each algorithm: `TokenVerifier.verify` of a token seen before (the cache of verified tokens: what a
partner reusing its access token pays), of a token never seen (signature and claims checked: what the first
call with a new token pays), and the whole `AuthInterceptor.intercept_service` on a cached token (metadata
scan, cache, scope check, rate limiter) around a continuation that does nothing. The end-to-end figure over a
real channel is `python -m loadtest.recommend_latency --auth` against the same without `--auth`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from clients import tokens
from server.auth.keys import ASYMMETRIC, FileKeySource
from server.auth.ratelimit import RateLimiter
from server.auth.tokens import TokenVerifier
from server.interceptors.auth import AuthInterceptor
from server.interceptors.handlers import Handler

METHOD = "/aisle.v1.RecommendationService/Recommend"


class _Details:
    def __init__(self, token: str) -> None:
        self.method = METHOD
        self.invocation_metadata = (("user-agent", "grpc-python"), ("authorization", f"Bearer {token}"))


async def _continuation(details: Any) -> Handler | None:
    return _HANDLER


_HANDLER: Handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)


async def measure(alg: str, calls: int, directory: Path) -> dict[str, float]:
    key = tokens.generate_key(alg)
    (directory / f"{alg}.json").write_text(json.dumps(tokens.jwks([key])))
    source = await FileKeySource.load(directory / f"{alg}.json", ASYMMETRIC)
    cached = TokenVerifier(source, tokens.DEV_ISSUER, tokens.DEV_AUDIENCE, ASYMMETRIC)
    uncached = TokenVerifier(source, tokens.DEV_ISSUER, tokens.DEV_AUDIENCE, ASYMMETRIC, cache_size=0)
    token = tokens.mint(key, ["recommendations:read"])
    header = f"Bearer {token}"
    interceptor = AuthInterceptor(cached, RateLimiter(1e9))  # a limiter that never refuses, but counts
    details = _Details(token)
    await cached.verify(header)

    started = time.perf_counter()
    for _ in range(calls):
        await cached.verify(header)
    hit = time.perf_counter() - started

    misses = max(200, calls // 20)
    started = time.perf_counter()
    for _ in range(misses):
        await uncached.verify(header)
    miss = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(calls):
        await interceptor.intercept_service(_continuation, details)  # type: ignore[arg-type]
    whole = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(calls):
        await _continuation(details)
    bare = time.perf_counter() - started
    return {
        "cached_us": hit / calls * 1e6,
        "uncached_us": miss / misses * 1e6,
        "interceptor_us": (whole - bare) / calls * 1e6,
        "token_bytes": float(len(token)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.auth_verify")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    print(
        f"{'alg':<6} {'token bytes':>11} {'cached verify':>14} {'uncached verify':>16} {'interceptor (cached)':>21}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for alg in sorted(ASYMMETRIC):
            result = asyncio.run(measure(alg, args.calls, Path(tmp)))
            print(
                f"{alg:<6} {result['token_bytes']:>11.0f} {result['cached_us']:>11.2f} µs "
                f"{result['uncached_us']:>13.1f} µs {result['interceptor_us']:>18.2f} µs"
            )


if __name__ == "__main__":
    main()
