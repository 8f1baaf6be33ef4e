"""A pool of candidate items, each with a blended score and the reasons that contributed to it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Candidates:
    """item -> score, plus item -> {reason: contribution}. Sources add; the ranker reads."""

    scores: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, item: str, score: float, reason: str) -> None:
        if score <= 0.0:
            return
        scores = self.scores
        scores[item] = scores.get(item, 0.0) + score
        why = self.reasons.get(item)
        if why is None:
            self.reasons[item] = {reason: score}
        else:
            why[reason] = why.get(reason, 0.0) + score

    def top_reasons(self, item: str, limit: int = 3) -> list[str]:
        """The reasons that contributed most to an item's score, strongest first."""
        why = self.reasons.get(item, {})
        return [r for r, _ in sorted(why.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
