"""Subnormal weights are zeroed when the server loads a model: same scores, none of Intel's microcode assists."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from server.ranking.features import FEATURES
from server.ranking.ranker import Ranker
from server.retrieval import bundles
from server.retrieval.subnormals import flush_subnormal_weights
from trainer.models.ranker_graph import RankerWeights, serving_graph

SUBNORMAL = np.float32(3e-39)  # below float32's smallest normal number, 1.18e-38


def weights_with_subnormals(n: int, planted: int) -> RankerWeights:
    """A 16-8 ranker over ``n`` features whose first layer holds ``planted`` subnormal weights (what training
    leaves for a feature that is constant in its data)."""
    rng = np.random.default_rng(5)
    first = rng.normal(0, 0.3, (16, n)).astype(np.float32)
    first.flat[:planted] = SUBNORMAL
    return RankerWeights(
        mean=np.zeros(n, dtype=np.float32),
        scale=np.ones(n, dtype=np.float32),
        layers=[
            (first, rng.normal(0, 0.1, 16).astype(np.float32)),
            (rng.normal(0, 0.3, (8, 16)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)),
        ],
        output=(rng.normal(0, 0.3, (1, 8)).astype(np.float32), np.zeros(1, dtype=np.float32)),
        linear=(rng.normal(0, 0.1, (1, n)).astype(np.float32), np.zeros(1, dtype=np.float32)),
    )


def subnormals(model: onnx.ModelProto) -> int:
    count = 0
    for initializer in model.graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype.kind == "f":
            count += int(((values != 0) & (np.abs(values) < np.finfo(values.dtype).tiny)).sum())
    return count


def test_flushing_zeroes_exactly_the_subnormal_weights() -> None:
    model = serving_graph(weights_with_subnormals(len(FEATURES), planted=40))
    before = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    assert subnormals(model) == 40
    assert flush_subnormal_weights(model) == 40
    assert subnormals(model) == 0 and flush_subnormal_weights(model) == 0
    for initializer in model.graph.initializer:
        after, was = numpy_helper.to_array(initializer), before[initializer.name]
        assert after.dtype == was.dtype and after.shape == was.shape
        normal = (
            np.abs(was) >= np.finfo(np.float32).tiny if was.dtype.kind == "f" else np.ones(was.shape, bool)
        )
        np.testing.assert_array_equal(after[normal], was[normal])  # every other number kept as it was
        assert not np.any(after[~normal])


def test_the_server_loads_an_older_bundles_ranker_without_its_subnormals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ranker written before the trainer zeroed them: the server zeroes its 40, says so, and scores as the
    zeroed model does."""
    path = tmp_path / bundles.RANKER
    model = serving_graph(weights_with_subnormals(len(FEATURES), planted=40))
    path.write_bytes(model.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="server.retrieval.onnx_session"):
        served = Ranker(path, {"features": list(FEATURES)})
    assert any("40 subnormal weights of the ranker" in r.getMessage() for r in caplog.records)

    flush_subnormal_weights(model)
    clean = tmp_path / "clean.onnx"
    clean.write_bytes(model.SerializeToString())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.retrieval.onnx_session"):
        reference = Ranker(clean, {"features": list(FEATURES)})
    assert not caplog.records  # nothing to say about a clean model
    rows = np.random.default_rng(9).random((300, len(FEATURES)), dtype=np.float32)
    np.testing.assert_array_equal(served.score(rows), reference.score(rows))


def test_a_model_that_does_not_parse_is_still_a_bundle_error(tmp_path: Path) -> None:
    path = tmp_path / bundles.RANKER
    path.write_bytes(b"not a model")
    with pytest.raises(bundles.BundleError, match="cannot load the ranker"):
        Ranker(path, {"features": list(FEATURES)})
