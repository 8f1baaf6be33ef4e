"""The JWT interceptor: every call of a protected method carries a verified token allowed to make it.

It runs outside the error interceptor, so a call is authenticated before its request is even parsed: a
caller without a valid token learns UNAUTHENTICATED, never whether its request would have been valid.
Refusals are answered by a handler that ignores the request bytes:

- no or bad token → UNAUTHENTICATED; a valid token without the method's scope → PERMISSION_DENIED;
- a partner over its rate → RESOURCE_EXHAUSTED with google.rpc.RetryInfo;
- a user-bound token whose request acts for another customer → PERMISSION_DENIED, checked on the parsed
  request before the method runs, so nothing of it is applied.

Privacy methods and user-bound calls run with `server.auth.caller.CALLER` set to the verified caller.

Health and reflection stay open (`server.auth.policy.OPEN_SERVICES`). Without a key source there is no
interceptor at all: the server runs open and says so at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from feature_worker.errors import AisleError
from server.auth.caller import CALLER
from server.auth.errors import AuthConfigError, PermissionDenied, Unauthenticated
from server.auth.keys import FileKeySource, KeySource, UrlKeySource, check_algorithms
from server.auth.policy import PRIVACY, authorize, check_user_binding, is_open, required_scope
from server.auth.ratelimit import RateLimiter
from server.auth.tokens import Principal, TokenVerifier
from server.config import ServerSettings
from server.interceptors.errors import to_status
from server.interceptors.handlers import Context, Continuation, Handler, unary_behaviour

log = logging.getLogger(__name__)


def _authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The one `authorization` entry; none, two or a binary one are refused (never pick one of several)."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated("this method requires `authorization: Bearer <JWT>` metadata")
    if len(values) > 1 or not isinstance(values[0], str):
        raise Unauthenticated("exactly one `authorization: Bearer <JWT>` metadata entry is allowed")
    return values[0]


def _refusal(handler: Handler | None, error: AisleError) -> Handler:
    """A handler of the same kind as `handler` that answers `error` without reading the request."""
    status = to_status(error)

    async def refuse(request: Any, context: Context) -> None:
        await context.abort_with_status(status)

    def ignore(data: bytes) -> None:
        return None

    serialize = handler.response_serializer if handler is not None else None
    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, ignore, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, ignore, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, ignore, serialize)
    return grpc.stream_stream_rpc_method_handler(refuse, ignore, serialize)


def _with_principal(handler: Handler, principal: Principal, method: str) -> Handler:
    """`handler` run with `CALLER` set; for a user-bound token, refusing a request that acts for another customer
    than the token's before the method runs."""
    if (
        handler.unary_unary is None
    ):  # every aisle.v1 method is unary; anything else is refused rather than guessed
        return _refusal(handler, PermissionDenied("this method cannot be called with this token"))
    behaviour = unary_behaviour(handler)

    async def bound(request: Any, context: Context) -> Any:
        # An unparsable request is not a Message: the error interceptor inside answers INVALID_ARGUMENT.
        if principal.user is not None and isinstance(request, Message):
            try:
                check_user_binding(principal, method, request)
            except AisleError as error:
                await context.abort_with_status(to_status(error))
        token = CALLER.set(principal)
        try:
            return await behaviour(request, context)
        finally:
            CALLER.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        bound,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes and rate-limits every call of a protected method."""

    def __init__(self, verifier: TokenVerifier, limiter: RateLimiter) -> None:
        self.verifier = verifier
        self.limiter = limiter if limiter.enabled else None

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if is_open(method):
            return handler
        try:
            authorization = _authorization(handler_call_details.invocation_metadata)
            principal = await self.verifier.verify(authorization)
            authorize(principal, method)
            if self.limiter is not None:
                self.limiter.acquire(principal.partner)
        except AisleError as error:
            return _refusal(handler, error)
        except Exception:  # a bug must not let the call through, nor answer UNKNOWN: refuse, and say so
            log.exception("checking the token of a call to %s failed", method)
            return _refusal(handler, Unauthenticated("the bearer token could not be checked"))
        if handler is None or (principal.user is None and required_scope(method) != PRIVACY):
            return handler
        return _with_principal(handler, principal, method)

    @property
    def source(self) -> KeySource:
        return self.verifier.source

    def start(self) -> None:
        self.source.start()

    async def close(self) -> None:
        await self.source.close()

    def describe(self) -> str:
        return f"JWT from {self.verifier.issuer} for {self.verifier.audience}, keys: {self.source.describe()}"


async def build_auth(settings: ServerSettings) -> AuthInterceptor | None:
    """The interceptor the settings ask for, its keys loaded; None for an open server.

    Raises `AuthConfigError` (a start-up error) for settings that cannot work: a forbidden algorithm, both
    or (with `auth_required`) neither key source, no issuer or audience, an unusable JWKS.
    """
    algorithms = check_algorithms(settings.auth_algorithms)
    if settings.auth_jwks_file and settings.auth_jwks_url:
        raise AuthConfigError("set one of auth_jwks_file and auth_jwks_url, not both")
    if not settings.auth_jwks_file and not settings.auth_jwks_url:
        if settings.auth_required:
            raise AuthConfigError(
                "auth_required is set but no key source is: set AISLE_AUTH_JWKS_FILE or _URL"
            )
        return None
    if not settings.auth_issuer or not settings.auth_audience:
        raise AuthConfigError("with a key source, AISLE_AUTH_ISSUER and AISLE_AUTH_AUDIENCE are required")
    if not settings.auth_token_types:
        raise AuthConfigError("auth_token_types must name at least one token type (at+jwt)")
    source: KeySource
    if settings.auth_jwks_file is not None:
        source = await FileKeySource.load(
            settings.auth_jwks_file, algorithms, settings.auth_jwks_refresh_s or 1.0
        )
    else:
        source = await UrlKeySource.load(
            settings.auth_jwks_url,
            algorithms,
            interval_s=settings.auth_jwks_refresh_s or 300.0,
            min_interval_s=settings.auth_jwks_min_refresh_s,
            timeout_s=settings.auth_jwks_timeout_s,
        )
    verifier = TokenVerifier(
        source,
        settings.auth_issuer,
        settings.auth_audience,
        algorithms,
        settings.auth_token_types,
        settings.auth_leeway_s,
        settings.auth_cache_size,
    )
    limiter = RateLimiter(
        settings.auth_rate_limit_rps, settings.auth_rate_limit_burst, settings.auth_rate_limits
    )
    return AuthInterceptor(verifier, limiter)
