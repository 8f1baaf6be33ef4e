"""The audit log of privacy calls: who asked what about whom, when, and how it ended; never the data.

One JSON object per line, appended, flushed and fsynced before the call is answered:
`{"ts_ms", "time", "who", "peer", "method", "subject", "outcome", "receipt_id", "seconds"}`. `subject` is the
customer id the call named (the erasure's own record of accountability); no attribute, event or feature of
theirs is ever written here. `who` is the authenticated caller: an authentication interceptor sets
the verified caller (`server.auth.caller.CALLER`, which Aisle's own interceptor does) or `PRINCIPAL` (e.g. the token's
`sub` or `client_id`) inside the handler it wraps, before awaiting the wrapped
behaviour (a context variable set there is seen by the service's code, which runs in the same task); without
one, `anonymous`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from feature_worker.errors import StoreUnavailable
from server.auth.caller import current_caller

#: The caller of the current gRPC call, as authentication established it ("" when none did).
PRINCIPAL: ContextVar[str] = ContextVar("aisle_principal", default="")


def caller() -> str:
    """Who is calling: the partner of the verified token (and the customer a user-bound token acts for), as the
    auth interceptor records it (`server.auth.caller`); else what another interceptor put in `PRINCIPAL`; else
    ``anonymous`` (a server running without authentication)."""
    principal = current_caller()
    if principal is not None:
        return f"{principal.partner} (for {principal.user})" if principal.user else principal.partner
    return PRINCIPAL.get() or "anonymous"


class AuditLog:
    """Appends one line per privacy call to `path` (created with its directory; mode 600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(
        self,
        *,
        who: str,
        peer: str,
        method: str,
        subject: str,
        outcome: str,
        receipt_id: str = "",
        seconds: float = 0.0,
    ) -> None:
        """Write one entry durably; `StoreUnavailable` if it cannot be (the call then fails: no unlogged call)."""
        now = time.time_ns() // 1_000_000
        entry = {
            "ts_ms": now,
            "time": datetime.fromtimestamp(now / 1000, UTC).isoformat(timespec="milliseconds"),
            "who": who,
            "peer": peer,
            "method": method,
            "subject": subject[:256],
            "outcome": outcome,
            "receipt_id": receipt_id,
            "seconds": round(seconds, 6),
        }
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise StoreUnavailable(f"cannot write the audit log {self.path}: {exc}") from exc

    def close(self) -> None:
        self._file.close()
