"""The audit log names the caller that an authentication interceptor established, over a real channel."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import grpc

from loadtest.harness.children import with_master_key
from protos.aisle.v1 import users_pb2, users_pb2_grpc
from server.app import build_engine
from server.config import ServerSettings
from server.interceptors.errors import ErrorInterceptor
from server.privacy.audit import PRINCIPAL
from server.services.users import UserService


class Principal(grpc.aio.ServerInterceptor):
    """What an authentication interceptor does once a token is verified: the caller for the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        assert handler is not None  # every method of this test's server is registered
        # On an asyncio server the behaviour is a coroutine function of the aio context (the stubs know only
        # the blocking server's).
        behaviour = cast(
            Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary
        )
        caller = dict(details.invocation_metadata or ()).get("x-test-caller", "")
        assert isinstance(caller, str)  # not a binary (-bin) header

        async def as_caller(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            PRINCIPAL.set(caller)
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            as_caller, handler.request_deserializer, handler.response_serializer
        )


async def test_the_audit_log_names_the_authenticated_caller(tmp_path: Path) -> None:
    settings = ServerSettings(
        data_dir=tmp_path, port=0, master_key_file=Path(with_master_key({})["AISLE_MASTER_KEY_FILE"])
    )
    engine = await build_engine(settings)
    server = grpc.aio.server(interceptors=[Principal(), ErrorInterceptor(settings.max_request_bytes)])
    users_pb2_grpc.add_UserServiceServicer_to_server(UserService(engine), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = users_pb2_grpc.UserServiceStub(channel)
            await stub.ExportUser(
                users_pb2.ExportUserRequest(user_id="u1"), metadata=(("x-test-caller", "partner-42"),)
            )
            await stub.EraseUser(users_pb2.EraseUserRequest(user_id="u1"))
    finally:
        await server.stop(None)
        await engine.close()
    entries = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["method"], e["who"]) for e in entries] == [
        ("ExportUser", "partner-42"),
        ("EraseUser", "anonymous"),
    ]
