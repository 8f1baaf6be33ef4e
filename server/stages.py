"""Where the time of one Recommend goes: the stages of the serving path, timed by the engine.

The engine fills one `StageTimes` per Recommend (``time.perf_counter`` differences, in seconds) and hands it
to `Engine.stage_observer` when one is set (the server's Prometheus metrics); nothing is recorded otherwise,
so tools and `trainer evaluate` pay nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The stage names, in the order a request passes them (the label values of the stage histogram).
STAGES = ("read", "retrieval", "features", "ranking", "rules")


@dataclass(slots=True)
class StageTimes:
    """Seconds spent in each stage of one Recommend.

    - ``read``: the one feature-store round trip (user state and co-visitation neighbours).
    - ``retrieval``: every candidate source (the user tower and FAISS included) into the candidate matrix.
    - ``features``: the ranker's feature matrix for the candidates.
    - ``ranking``: the ranker (one ONNX call) or, without one, the blended score.
    - ``rules``: business rules, diversity, the top k, backfill and reasons.
    """

    read: float = 0.0
    retrieval: float = 0.0
    features: float = 0.0
    ranking: float = 0.0
    rules: float = 0.0

    def items(self) -> tuple[tuple[str, float], ...]:
        """(stage, seconds) in `STAGES` order."""
        return (
            ("read", self.read),
            ("retrieval", self.retrieval),
            ("features", self.features),
            ("ranking", self.ranking),
            ("rules", self.rules),
        )
