"""Who is calling, for code below the interceptor that must record it (the privacy audit log: who, what, when).

The auth interceptor sets `CALLER` around the handlers of the methods that need `privacy` and around every call of
a user-bound token; elsewhere it stays None, so the hot path pays nothing for it. Without auth it is always None.
"""

from __future__ import annotations

from contextvars import ContextVar

from server.auth.tokens import Principal

CALLER: ContextVar[Principal | None] = ContextVar("aisle_caller", default=None)


def current_caller() -> Principal | None:
    """The verified caller of the call being handled, where the interceptor records one (see the module)."""
    return CALLER.get()
