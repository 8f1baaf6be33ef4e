"""The gateway's ASGI application: each HTTP request matched to a route, transcoded, called over gRPC.

Authentication is the server's: the `Authorization: Bearer ...` header goes to the gRPC server as the
`authorization` metadata it verifies, so both entry points accept exactly the same tokens and scopes (a
user-bound token acts for its own customer only, here too). CORS answers browsers from the configured
origins only; `/openapi.json` serves the document generated from the contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from server.gateway import errors, openapi, transcode
from server.gateway.config import GatewaySettings
from server.gateway.routes import Route, routes

JSON = "application/json"
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


@dataclass
class Gateway:
    """The routes and one gRPC channel to the server (opened in the application's lifespan)."""

    settings: GatewaySettings
    table: list[Route] = field(default_factory=routes)
    channel: grpc.aio.Channel | None = None
    calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = field(default_factory=dict)

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(
            self.settings.backend,
            options=[("grpc.max_send_message_length", self.settings.max_body_bytes * 2)],
        )
        for route in self.table:
            if route.grpc_path not in self.calls:
                self.calls[route.grpc_path] = self.channel.unary_unary(
                    route.grpc_path,
                    request_serializer=_serialize,
                    response_deserializer=transcode.message_class(route.method.output_type).FromString,
                )

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def handle(self, request: Request) -> Response:
        """Match, transcode, call, answer: JSON of the response message, or of the error status."""
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        matches = [(r, values) for r in self.table if (values := r.match(path)) is not None]
        if not matches:
            return _error(404, errors.status_json(grpc.StatusCode.NOT_FOUND, f"no API method at {path}"))
        chosen = next(((r, v) for r, v in matches if r.http_method == request.method), None)
        if chosen is None:
            allowed = ", ".join(sorted({r.http_method for r, _ in matches}))
            body = errors.status_json(
                grpc.StatusCode.UNIMPLEMENTED, f"{request.method} is not allowed on {path}"
            )
            return _error(405, body, {"Allow": allowed})
        route, values = chosen
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            return _too_large(self.settings.max_body_bytes)
        payload = await request.body()
        if len(payload) > self.settings.max_body_bytes:
            return _too_large(self.settings.max_body_bytes)
        try:
            message = transcode.build_request(route, values, request.query_params.multi_items(), payload)
        except transcode.Invalid as exc:
            return _error(400, errors.bad_request_json(exc.problems))
        metadata: list[tuple[str, str]] = []
        authorization = request.headers.get("authorization")
        if authorization is not None:
            metadata.append(("authorization", authorization))
        try:
            answer = await self.calls[route.grpc_path](
                message, metadata=metadata, timeout=self.settings.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            status = errors.HTTP_STATUS.get(exc.code(), 500)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            trailing = tuple(exc.trailing_metadata() or ())
            return _error(status, errors.status_json(exc.code(), exc.details() or "", trailing), headers)
        return Response(transcode.to_json(answer), media_type=JSON)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _error(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _too_large(limit: int) -> Response:
    problems = [("body", f"is larger than {limit} bytes")]
    return _error(413, errors.bad_request_json(problems, "request too large"))


def build_app(settings: GatewaySettings, version: str = "0.1.0") -> Starlette:
    """The ASGI application for `settings`."""
    gateway = Gateway(settings)
    document = openapi.document(gateway.table, version)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.open()
        try:
            yield
        finally:
            await gateway.close()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    async def api(request: Request) -> Response:
        return await gateway.handle(request)

    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=_METHODS,
            allow_headers=["authorization", "content-type"],
            max_age=600,
        )
    ]
    app_routes: list[Any] = [
        StarletteRoute("/openapi.json", openapi_json, methods=["GET"]),
        StarletteRoute("/{path:path}", api, methods=_METHODS),
    ]
    return Starlette(routes=app_routes, middleware=middleware, lifespan=lifespan)
