"""The shape every wrapping interceptor of the server shares: wrap each unary-unary handler once per method.

gRPC hands an interceptor the same registered handler for every call of a method, so the wrapper is built the
first time and reused (rebuilt only if gRPC ever hands another handler), instead of allocating closures on every
call of the hot path.
"""

from __future__ import annotations

from abc import abstractmethod

import grpc

from server.interceptors.handlers import Continuation, Handler


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap one method's handler (`_wrap`); this class caches the result per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    @abstractmethod
    def _wrap(self, method: str, handler: Handler) -> Handler:
        """The handler to serve ``method`` with, around ``handler`` (a unary-unary one)."""
