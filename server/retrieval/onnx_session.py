"""ONNX Runtime sessions as the server runs every model of a bundle: CPU, one thread, fully optimised."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from server.retrieval.bundles import BundleError


def single_thread_session(path: Path, what: str) -> ort.InferenceSession:
    """A session for the model at ``path``; `BundleError` naming ``what`` when it cannot be loaded.

    One intra-op and one inter-op thread: a second thread never helped a single request on these machines
    (DESIGN.md), and several server processes share the cores instead.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad models
        raise BundleError(f"{path}: cannot load the {what}: {exc}") from exc
