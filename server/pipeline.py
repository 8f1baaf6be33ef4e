"""One request's serving configuration: what an experiment variant changes about the serving path.

`Recommender.recommend` takes an optional `Pipeline`; None (every request outside experiments) serves exactly
as the server does by default. `server.experiments` builds one per variant, once, when experiments change, so a
request pays for a dict lookup, never for building one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Pipeline:
    """How one variant serves. Every field None means "the server's default"."""

    #: Rank with the bundle's learned ranker (True) or with the blend (False).
    use_ranker: bool | None = None
    #: Blend weights in `server.retrieval.candidates.SOURCES` order (they also order the reasons).
    weights: npt.NDArray[np.float64] | None = None
    #: Source numbers (`candidates.SOURCES` positions) that may propose candidates; None: all.
    sources: frozenset[int] | None = None
    #: The per-category cap of requests that leave `max_per_category` at 0 (-1: no cap).
    max_per_category: int | None = None
    #: Serve this bundle version instead of the promoted one ("" or None: the promoted one).
    bundle_version: str | None = None

    def allows(self, source: int) -> bool:
        """Whether candidate source `source` runs for this pipeline."""
        return self.sources is None or source in self.sources
