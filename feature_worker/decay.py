"""Exponentially decayed sums whose additions commute.

A weight `w` observed at time `t` is stored as `w * 2 ** ((t - EPOCH_MS) / half_life)`. Summing
such terms gives the same total in any order, so late events, duplicated deliveries made idempotent
upstream and parallel writers (Redis HINCRBYFLOAT) all agree. The decayed value at time `now` is the
stored sum times `2 ** (-(now - EPOCH_MS) / half_life)`.

With a 30-day half-life the exponent stays within a double's range for events between about 1970 and
2100 (2**±600), which covers every real data set we load.
"""

from __future__ import annotations

import math

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
DAY_MS = 86_400_000

#: Exponents are clamped so a wild timestamp cannot overflow a stored sum to infinity.
_MAX_EXPONENT = 900.0


def encode(weight: float, ts_ms: int, half_life_ms: float) -> float:
    """The stored form of `weight` observed at `ts_ms`."""
    exponent = (ts_ms - EPOCH_MS) / half_life_ms
    return weight * math.pow(2.0, max(-_MAX_EXPONENT, min(_MAX_EXPONENT, exponent)))


def scale_at(now_ms: int, half_life_ms: float) -> float:
    """Multiply a stored sum by this to read its decayed value at `now_ms`."""
    exponent = -(now_ms - EPOCH_MS) / half_life_ms
    return math.pow(2.0, max(-_MAX_EXPONENT, min(_MAX_EXPONENT, exponent)))


def quantize(value: float) -> float:
    """`value` rounded to 24 significant bits (a float32's precision, at any magnitude).

    The fold keeps decayed sums quantized after every addition, so that the stored form can hold them
    as float32 under a shared power of two exactly (see `state.UserState.to_bytes`), and a state read
    back from storage folds on bit for bit like one that never left memory. Relative error < 6e-8.
    """
    mantissa, exponent = _frexp(value)
    return _ldexp(round(mantissa * 16_777_216.0), exponent - 24)


_frexp = math.frexp
_ldexp = math.ldexp
