"""The radix sorts of the serving path's kernels order as numpy's stable sorts do."""

from __future__ import annotations

import numpy as np
import pytest

from server.retrieval.kernels import sorted_ints, stable_argsort


def _floats(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    if kind == 0:
        return rng.random(n)
    if kind == 1:  # negative, and many ties
        return -rng.integers(0, 4, n).astype(np.float64)
    if kind == 2:  # every magnitude, both signs
        return rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    values = rng.integers(-2, 3, n).astype(np.float64)
    specials = [np.nan, -0.0, 0.0, np.inf, -np.inf]
    for at in rng.choice(n, size=min(n, 8), replace=False) if n else ():
        values[at] = specials[int(rng.integers(0, len(specials)))]
    return values


@pytest.mark.parametrize("n", [0, 1, 2, 5, 17, 100, 320, 2000])
def test_stable_argsort_is_numpys_stable_argsort(n: int) -> None:
    rng = np.random.default_rng(n)
    for kind in range(4):
        for _ in range(5):
            keys = _floats(rng, n, kind)
            assert stable_argsort(keys).tolist() == np.argsort(keys, kind="stable").tolist()
            narrow = keys.astype(np.float32) if kind != 2 else rng.random(n).astype(np.float32)
            assert stable_argsort(narrow).tolist() == np.argsort(narrow, kind="stable").tolist()


@pytest.mark.parametrize("low", [0, -5_000, -(2**62)])
def test_sorted_ints_is_numpys_sort(low: int) -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 320, 5000):
        values = rng.integers(low, 2**40, n)
        assert sorted_ints(values).tolist() == np.sort(values).tolist()
