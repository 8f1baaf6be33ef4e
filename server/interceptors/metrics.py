"""Times every unary call per method and status code (`server.metrics.ServerMetrics.handling`).

It goes first in the interceptor chain, so it sees the status the error interceptor gives (an undecodable request
is INVALID_ARGUMENT, a domain error its own status). The wrapped handler is built once per method, not per call:
the added cost is two clock reads, a status lookup and a histogram observation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from server.interceptors.handlers import Context, Handler, unary_behaviour
from server.interceptors.wrapping import WrappingInterceptor
from server.metrics import ServerMetrics

_CODE_NAMES: dict[object, str] = {code: code.name for code in grpc.StatusCode}
_CODE_NAMES_BY_VALUE: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(code: object) -> str:
    """The status code's name (`OK`, `INVALID_ARGUMENT`, …) from what `ServicerContext.code()` returns."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return _CODE_NAMES[code]
    if isinstance(code, int):
        return _CODE_NAMES_BY_VALUE.get(code, "UNKNOWN")
    return "UNKNOWN"


class MetricsInterceptor(WrappingInterceptor):
    """Observes each unary call's duration into ``metrics.handling`` with labels (method, code)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def _wrap(self, method: str, handler: Handler) -> Handler:
        behaviour = unary_behaviour(handler)
        observe = self.metrics.handling.observe
        clock = time.perf_counter
        labels_ok = (method, "OK")

        async def timed(request: Any, context: Context) -> Any:
            started = clock()
            try:
                response = await behaviour(request, context)
            except asyncio.CancelledError:
                observe((method, "CANCELLED"), clock() - started)
                raise
            except Exception:
                # An abort (AbortError) has set the code; anything else leaves gRPC to answer UNKNOWN.
                code = context.code()
                observe((method, "UNKNOWN" if code is None else code_name(code)), clock() - started)
                raise
            code = context.code()
            observe(labels_ok if code is None else (method, code_name(code)), clock() - started)
            return response

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
