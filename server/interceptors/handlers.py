"""The types of an asyncio server's method handlers, which grpc's stubs describe for the blocking server only.

types-grpcio types `RpcMethodHandler.unary_unary` as a plain function of a blocking `grpc.ServicerContext`;
on a `grpc.aio` server it is a coroutine function of a `grpc.aio.ServicerContext`. The interceptors name these
shapes here instead of spelling `Any` at every use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc

# Quoted: grpc's classes are generic only in their stubs, not at run time.
#: A registered method's handler; its request and response types vary by method.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
#: The rest of the interceptor chain: the handler of a call's method, or None for an unknown method.
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
#: A call's context on the asyncio server; its request and response types vary by method.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
#: What an asyncio server runs for a unary-unary call.
UnaryBehaviour: TypeAlias = "Callable[[Any, Context], Awaitable[Any]]"


def unary_behaviour(handler: Handler) -> UnaryBehaviour:
    """The coroutine function a unary-unary `handler` of the asyncio server runs.

    Raises ValueError for a streaming handler (callers check `handler.unary_unary` first).
    """
    behaviour = handler.unary_unary
    if behaviour is None:
        raise ValueError("not a unary-unary handler")
    # The asyncio server registers coroutine functions of its own context; the stubs know only blocking ones.
    return cast(UnaryBehaviour, behaviour)
