"""What the engine answers with: a Track batch's outcome, a list of recommendations, and the clock it stamps."""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.model_version import MODEL_VERSION
from server.recommender import Recommendation

#: `MODEL_VERSION` is re-exported: the engine's modules read it with `Answer`.
__all__ = ["MODEL_VERSION", "Answer", "TrackResult", "now_ms"]


@dataclass(slots=True)
class TrackResult:
    accepted: int
    duplicates: int
    rejected: list[tuple[int, str, str]]  # (index, field, reason)


@dataclass(slots=True)
class Answer:
    items: list[Recommendation]
    recommendation_id: str
    variant: str
    model_version: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000
