"""The learned re-ranker of a model bundle: an ONNX model that scores a request's whole candidate matrix at once.

The bundle's ``ranker.onnx`` takes ``features`` (float32 ``[rows, n]``) and returns ``scores`` (float32
``[rows]``; higher is better); ``meta.json``'s ``ranker.features`` names the ``n`` columns, which are picked
by name from `server.ranking.features.FEATURES` (a feature the server does not compute refuses the bundle).
One ONNX Runtime thread: a few hundred rows take tens of microseconds, and several server processes share
the cores instead (DESIGN.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.ranking.features import FEATURES
from server.retrieval.bundles import RANKER_INPUT, RANKER_OUTPUT, BundleError
from server.retrieval.onnx_session import single_thread_session


class Ranker:
    """One bundle's ranker, loaded and checked; `score` is safe to call from one thread at a time."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        names = meta.get("features")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise BundleError(
                f"{path}: meta.json ranker.features must be a list of feature names, got {names!r}"
            )
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise BundleError(f"{path}: the ranker needs features this server does not compute: {unknown}")
        self.features: list[str] = names
        self.meta = meta
        column = {name: i for i, name in enumerate(FEATURES)}
        self._columns = np.array([column[n] for n in names], dtype=np.int64)
        #: True when the ranker reads every column in order: no copy is needed.
        self._identity = names == list(FEATURES)
        self.session = single_thread_session(path, "ranker")
        inputs = {i.name: i for i in self.session.get_inputs()}
        if RANKER_INPUT not in inputs or inputs[RANKER_INPUT].type != "tensor(float)":
            raise BundleError(
                f"{path}: the ranker needs a float input {RANKER_INPUT!r}, has {sorted(inputs)}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if RANKER_OUTPUT not in outputs:
            raise BundleError(f"{path}: the ranker needs an output {RANKER_OUTPUT!r}, has {outputs}")
        self._outputs = [RANKER_OUTPUT]
        self.self_check(path)

    def self_check(self, path: Path) -> None:
        """Score two rows of zeros: the shape must come back right and finite."""
        try:
            scores = self.score(np.zeros((2, len(FEATURES)), dtype=np.float32))
        except Exception as exc:  # whatever the runtime raises on a graph that does not fit the contract
            raise BundleError(f"{path}: a test query of the ranker failed: {exc}") from exc
        if scores.shape != (2,) or not np.isfinite(scores).all():
            raise BundleError(f"{path}: the ranker gave {scores.shape} scores for 2 rows, or non-finite ones")

    def score(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One score per row of a `feature_matrix` (all of `FEATURES`, in order)."""
        if len(matrix) == 0:
            return np.zeros(0, dtype=np.float32)
        x = matrix if self._identity else np.ascontiguousarray(matrix[:, self._columns])
        scores: npt.NDArray[np.float32] = self.session.run(self._outputs, {RANKER_INPUT: x})[0].reshape(-1)
        return scores
