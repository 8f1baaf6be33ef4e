"""Per-partner rate limits: one token bucket per partner, in this process.

Each server process limits on its own, so N processes behind one address allow up to N times the rate;
set the per-process rate accordingly. Partners come from verified tokens only, so their number is that of the
issuer's clients, not of whatever callers send.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from server.auth.errors import RateLimited


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float


class RateLimiter:
    """`rps` calls per second per partner with bursts of `burst` (0: one second's worth); `overrides` sets
    the rate of named partners (0: unlimited). A rate of 0 means no limit."""

    def __init__(self, rps: float, burst: float = 0.0, overrides: Mapping[str, float] | None = None) -> None:
        self.rps = rps
        self.burst = burst
        self.overrides = dict(overrides or {})
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rps > 0 or any(rate > 0 for rate in self.overrides.values())

    def _bucket(self, partner: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(partner)
        if bucket is None:
            rate = self.overrides.get(partner, self.rps)
            if rate <= 0:
                return None
            burst = self.burst or max(rate, 1.0)
            bucket = self._buckets[partner] = _Bucket(rate, burst, burst, now)
        return bucket

    def acquire(self, partner: str) -> None:
        """Take one call from the partner's bucket, or raise `RateLimited` with when one will be there."""
        now = time.monotonic()
        bucket = self._bucket(partner, now)
        if bucket is None:
            return
        bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.stamp) * bucket.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        raise RateLimited((1.0 - bucket.tokens) / bucket.rate)
