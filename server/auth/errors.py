"""Refusals of the auth layer, mapped to gRPC statuses at the edge like every other `AisleError`.

Their messages never carry the token or its claims: a caller learns that and roughly why it was refused,
nothing about what it sent that it does not already know.
"""

from __future__ import annotations

from feature_worker.errors import AisleError
from server.config import ConfigError


class AuthConfigError(ConfigError):
    """The auth settings or the key source cannot work; raised at start-up, never on a call."""


class Unauthenticated(AisleError):
    """No usable bearer token: missing, malformed, forged, expired or not for us."""

    status = "UNAUTHENTICATED"


class PermissionDenied(AisleError):
    """A valid token that may not make this call (scope, or a user-bound token acting for someone else)."""

    status = "PERMISSION_DENIED"


class RateLimited(AisleError):
    """The partner is over its rate; `retry_after_s` goes to the client as google.rpc.RetryInfo."""

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limit exceeded; retry in {retry_after_s:.3f} s")
