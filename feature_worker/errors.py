"""Aisle's errors. One root; each subclass names the gRPC status the server's edge maps it to.

Only the edge (`server.interceptors.errors`) imports grpc; everything below raises these.
"""

from __future__ import annotations


class AisleError(Exception):
    """Root of every error Aisle raises on purpose. `status` is a gRPC status code name."""

    status = "INTERNAL"


class InvalidArgument(AisleError):
    """Bad input. `violations` are `(field, reason)` pairs, reported as google.rpc.BadRequest details."""

    status = "INVALID_ARGUMENT"

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        summary = "; ".join(f"{field}: {reason}" for field, reason in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        super().__init__(f"invalid argument: {summary}{more}")


class NotFound(AisleError):
    status = "NOT_FOUND"


class StoreUnavailable(AisleError):
    """A backing store (journal, Redis, Kafka) cannot be reached or written; the client may retry."""

    status = "UNAVAILABLE"
