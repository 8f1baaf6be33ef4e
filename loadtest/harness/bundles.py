"""Model bundles with chosen embeddings, in the layout of `server.retrieval.bundles`, for tests and load tests.

The user tower is a real ONNX graph honouring the bundle contract (inputs ``items`` and ``types``, int64
``[batch, max_len]``, left-padded with 0; output ``user``, float32 ``[batch, dim]``): a recency-weighted mean
of the rows of an *input* embedding table gathered by ``items`` (padding masked out), plus the same weighted
mean of a type embedding gathered by ``types``. The FAISS index is an ``IndexFlatIP`` over the *item*
embeddings. Giving the two tables separately lets a test say exactly what a click means: with
``inputs[p] == vectors[q]``, a user whose only interaction is ``p`` is recommended ``q`` first.

Built with the ``onnx`` package (the ``train`` extra), never torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from server.retrieval import bundles
from server.retrieval.bundles import BundlePaths

#: Highest ``aisle.v1.EventType`` number the type table covers.
MAX_EVENT_TYPE = 7
#: Each older position of the sequence counts this much less than the one after it.
RECENCY_DECAY = 0.8


def user_tower(
    inputs: np.ndarray, max_len: int, types: np.ndarray | None = None, decay: float = RECENCY_DECAY
) -> onnx.ModelProto:
    """The ONNX user tower over ``inputs`` (``[n_items, dim]``: row ``j`` is item index ``j + 1``)."""
    n, dim = inputs.shape
    table = np.zeros((n + 1, dim), dtype=np.float32)
    table[1:] = inputs
    type_table = np.zeros((MAX_EVENT_TYPE + 1, dim), dtype=np.float32) if types is None else types
    # The newest interaction (the last column) weighs 1, each older one `decay` times the next.
    recency = (decay ** np.arange(max_len - 1, -1, -1)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(table, "item_table"),
        numpy_helper.from_array(type_table.astype(np.float32), "type_table"),
        numpy_helper.from_array(recency, "recency"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
        numpy_helper.from_array(np.array([1e-6], dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Gather", ["item_table", bundles.INPUT_ITEMS], ["item_rows"], axis=0),
        helper.make_node("Gather", ["type_table", bundles.INPUT_TYPES], ["type_rows"], axis=0),
        helper.make_node("Greater", [bundles.INPUT_ITEMS, "zero"], ["present"]),
        helper.make_node("Cast", ["present"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mask", "recency"], ["weights"]),  # [B, L]
        helper.make_node("ReduceSum", ["weights", "axis1"], ["total"], keepdims=1),  # [B, 1]
        helper.make_node("Add", ["total", "eps"], ["total_eps"]),
        helper.make_node("Unsqueeze", ["weights", "axis_last"], ["weights3"]),  # [B, L, 1]
        helper.make_node("Add", ["item_rows", "type_rows"], ["rows"]),
        helper.make_node("Mul", ["rows", "weights3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axis1"], ["summed"], keepdims=0),  # [B, dim]
        helper.make_node("Div", ["summed", "total_eps"], [bundles.OUTPUT_USER]),
    ]
    graph = helper.make_graph(
        nodes,
        "user_tower",
        [
            helper.make_tensor_value_info(bundles.INPUT_ITEMS, TensorProto.INT64, ["batch", max_len]),
            helper.make_tensor_value_info(bundles.INPUT_TYPES, TensorProto.INT64, ["batch", max_len]),
        ],
        [helper.make_tensor_value_info(bundles.OUTPUT_USER, TensorProto.FLOAT, ["batch", dim])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_bundle(
    bundles_dir: Path,
    version: str,
    item_ids: Sequence[str],
    vectors: np.ndarray,
    inputs: np.ndarray | None = None,
    max_len: int = 20,
    data: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    index: faiss.Index | None = None,
) -> BundlePaths:
    """Write bundle ``version`` under ``bundles_dir``: item ``item_ids[j]`` has embedding ``vectors[j]``.

    ``inputs`` (default ``vectors``) is the tower's input table; ``index`` replaces the flat index (HNSW…).
    ``meta.json`` is written last, as a trainer would, so the bundle is complete only once it is whole.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if len(item_ids) != n:
        raise ValueError(f"{len(item_ids)} item ids for {n} vectors")
    paths = bundles.bundle(bundles_dir, version)
    paths.root.mkdir(parents=True, exist_ok=False)
    tower_inputs = vectors if inputs is None else np.asarray(inputs, dtype=np.float32)
    onnx.save(user_tower(tower_inputs, max_len), str(paths.user_tower))
    if index is None:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
    faiss.write_index(index, str(paths.item_index))
    paths.item_ids.write_text("".join(f"{item}\n" for item in item_ids), encoding="utf-8")
    meta = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_len": max_len,
        "dim": dim,
        "index": {"kind": type(index).__name__, "recall@100": 1.0},
        "data": dict(data or {"dataset": "tests"}),
        "params": dict(params or {"model": "loadtest.harness.bundles"}),
        "metrics": {},
        "train_seconds": 0.0,
    }
    paths.meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return paths


def linear_ranker(weights: Mapping[str, float]) -> onnx.ModelProto:
    """An ONNX ranker honouring the bundle contract: ``scores = features @ w`` over the named features only."""
    w = np.array([list(weights.values())], dtype=np.float32).T  # [n, 1]
    nodes = [
        helper.make_node("MatMul", [bundles.RANKER_INPUT, "w"], ["column"]),
        helper.make_node("Squeeze", ["column", "axis1"], [bundles.RANKER_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear_ranker",
        [helper.make_tensor_value_info(bundles.RANKER_INPUT, TensorProto.FLOAT, ["rows", len(weights)])],
        [helper.make_tensor_value_info(bundles.RANKER_OUTPUT, TensorProto.FLOAT, ["rows"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def add_ranker(paths: BundlePaths, weights: Mapping[str, float]) -> None:
    """Give the bundle at ``paths`` a `linear_ranker` over ``weights`` (feature name -> weight)."""
    onnx.save(linear_ranker(weights), str(paths.ranker))
    meta = json.loads(paths.meta.read_text(encoding="utf-8"))
    meta["ranker"] = {"kind": "harness.linear", "features": list(weights), "weights": dict(weights)}
    paths.meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def one_hot(dim: int, axis: int, scale: float = 1.0) -> np.ndarray:
    """A vector of ``dim`` zeros with ``scale`` at ``axis``."""
    out = np.zeros(dim, dtype=np.float32)
    out[axis] = scale
    return out


def corrupt(paths: BundlePaths) -> None:
    """Make ``paths`` unloadable while keeping it complete (every file present): the tower is garbage."""
    paths.user_tower.write_bytes(b"this is not an ONNX model")
