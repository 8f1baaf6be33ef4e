"""What the server's interceptors and metrics add per call, in process (no network, no gRPC core).

    python -m loadtest.interceptor_cost [--calls 100000]

Runs a trivial async handler through each interceptor chain the server can have (none, the error interceptor,
metrics + errors) the way grpc.aio does per call (`intercept_service`, then the wrapped handler), and times
`ServerMetrics.observe_stages` for one Recommend's five stages. Best of 5 repetitions, microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.interceptors.errors import ErrorInterceptor
from server.interceptors.handlers import Handler
from server.interceptors.metrics import MetricsInterceptor
from server.metrics import ServerMetrics
from server.stages import StageTimes


class _Context:
    """Stands in for grpc.aio's ServicerContext: the metrics read only `code()`."""

    def code(self) -> None:
        return None


class _Details:
    method = "/aisle.v1.RecommendationService/Recommend"
    invocation_metadata = ()


async def _handler(request: Any, context: Any) -> Any:
    return request


def _best_us(run: Callable[[], None], calls: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


async def _chains(calls: int) -> dict[str, float]:
    handler: Handler = grpc.unary_unary_rpc_method_handler(_handler)
    context, details = _Context(), _Details()
    errors = ErrorInterceptor(4 * 1024 * 1024)
    metrics = MetricsInterceptor(ServerMetrics())

    async def registered(_: Any) -> Any:
        return handler

    async def through_errors(d: Any) -> Any:
        return await errors.intercept_service(registered, d)

    chains: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "no interceptor": registered,
        "errors": through_errors,
        "metrics + errors": lambda d: metrics.intercept_service(through_errors, d),
    }
    results = {}
    for name, chain in chains.items():
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                wrapped = await chain(details)
                await wrapped.unary_unary(1, context)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        results[name] = best
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.interceptor_cost")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    for name, us in asyncio.run(_chains(args.calls)).items():
        print(f"{name:>18}: {us:.2f} µs per call")
    metrics, times = ServerMetrics(), StageTimes(1e-4, 2e-4, 3e-5, 5e-5, 1e-4)

    def stages() -> None:
        for _ in range(args.calls):
            metrics.observe_stages(times)

    print(f"{'5 stages observed':>18}: {_best_us(stages, args.calls):.2f} µs per Recommend")


if __name__ == "__main__":
    main()
