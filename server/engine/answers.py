"""What the engine answers with: a Track batch's outcome, a list of recommendations, and the clock it stamps."""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.recommender import Recommendation

#: Reported in every answer served without a model bundle; with one, its version is reported instead.
MODEL_VERSION = "realtime-blend-1"


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
