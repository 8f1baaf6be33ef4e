"""Bearer tokens that renew themselves: a callable gives a token, the client sends it until it is about to
expire (its `exp`, read without verifying: the server verifies), then asks the callable again. A call
answered UNAUTHENTICATED (a key rotated, a token revoked) asks for a new token and is tried once more.

The callable is whatever gets a token from the issuer, e.g. an OAuth2 client-credentials request:

    def fetch() -> str:
        return requests.post(TOKEN_URL, data={"grant_type": "client_credentials", ...}).json()["access_token"]

    AisleClient(ClientOptions(target=..., token_provider=fetch))
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
from jwt.exceptions import PyJWTError

TokenProvider = Callable[[], str]


class TokenSource:
    """The current token from `provider`, renewed `margin_s` before its `exp`. Thread-safe."""

    def __init__(self, provider: TokenProvider, margin_s: float = 30.0) -> None:
        self.provider = provider
        self.margin_s = margin_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def current(self) -> str | None:
        """The token if it is still fresh, else None (without calling the provider)."""
        token = self._token
        return token if token is not None and time.time() < self._renew_at else None

    def get(self) -> str:
        """A fresh token, calling the provider if needed (one caller at a time)."""
        with self._lock:
            token = self.current()
            if token is None:
                token = self._token = self.provider()
                self._renew_at = _expiry(token) - self.margin_s
            return token

    def invalidate(self, token: str) -> None:
        """`token` was refused: the next `get` asks the provider again (unless someone already did)."""
        with self._lock:
            if self._token == token:
                self._token = None


def _expiry(token: str) -> float:
    """The token's `exp`, or never for a token that is not a JWT with one (opaque tokens)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except PyJWTError:
        return float("inf")
    return float(exp) if isinstance(exp, int | float) else float("inf")


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """Call details with our metadata (grpc's own class is private)."""


def _with_token(metadata: Any, token: str) -> list[tuple[str, str | bytes]]:
    kept = [(k, v) for k, v in (metadata or ()) if k != "authorization"]
    return [*kept, ("authorization", f"Bearer {token}")]


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds the current token to every unary call of a blocking channel."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def _details(self, details: Any, token: str) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            _with_token(details.metadata, token),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        token = self.source.get()
        outcome = continuation(self._details(client_call_details, token), request)
        if outcome.code() == grpc.StatusCode.UNAUTHENTICATED:
            self.source.invalidate(token)
            outcome = continuation(self._details(client_call_details, self.source.get()), request)
        return outcome


class AsyncBearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the current token to every unary call of an asyncio channel; the provider runs in a thread."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    async def _token(self) -> str:
        token = self.source.current()
        if token is None:
            token = await asyncio.to_thread(self.source.get)
        return token

    @staticmethod
    def _details(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, token)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        token = await self._token()
        call = await continuation(self._details(client_call_details, token), request)
        if await call.code() == grpc.StatusCode.UNAUTHENTICATED:
            self.source.invalidate(token)
            call = await continuation(self._details(client_call_details, await self._token()), request)
        return call
