"""`current_caller()` for code below the interceptor (the privacy audit log), in process: the privacy methods are
served by another part of the work, so this drives the interceptor with a handler of its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc

from protos.aisle.v1 import users_pb2
from server.auth.caller import current_caller
from server.auth.keys import ASYMMETRIC, FileKeySource
from server.auth.ratelimit import RateLimiter
from server.auth.tokens import Principal, TokenVerifier
from server.interceptors.auth import AuthInterceptor
from tests.auth_keys import AUDIENCE, ISSUER, generate_key, mint, write_jwks


async def test_privacy_handlers_see_their_verified_caller(tmp_path: Path) -> None:
    key = generate_key("ES256")
    write_jwks(tmp_path / "jwks.json", [key])
    source = await FileKeySource.load(tmp_path / "jwks.json", ASYMMETRIC)
    interceptor = AuthInterceptor(TokenVerifier(source, ISSUER, AUDIENCE, ASYMMETRIC), RateLimiter(0))
    seen: list[Principal | None] = []

    async def behaviour(request: Any, context: Any) -> bytes:
        seen.append(current_caller())
        return b""

    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(behaviour)

    async def continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    def details(method: str, scopes: list[str]) -> Any:
        token = mint(key, scopes, subject="dpo-tool")
        return SimpleNamespace(method=method, invocation_metadata=(("authorization", f"Bearer {token}"),))

    wrapped = await interceptor.intercept_service(
        continuation, details("/aisle.v1.UserService/EraseUser", ["privacy"])
    )
    assert wrapped is not handler
    assert wrapped is not None and wrapped.unary_unary is not None
    # No context: the behaviour under test never reads it.
    await wrapped.unary_unary(users_pb2.GetProfileRequest(user_id="u1"), None)  # type: ignore[arg-type]
    assert seen[0] is not None and seen[0].partner == "dpo-tool" and seen[0].scopes == {"privacy"}
    assert current_caller() is None  # only around the handler
    # The hot path is left alone: a partner's Recommend gets the handler itself, no wrapper.
    plain = await interceptor.intercept_service(
        continuation, details("/aisle.v1.RecommendationService/Recommend", ["recommendations:read"])
    )
    assert plain is handler
