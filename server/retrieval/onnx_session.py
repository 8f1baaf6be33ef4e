"""ONNX Runtime sessions as the server runs every model of a bundle: CPU, one thread, fully optimised, and no
subnormal weights (`server.retrieval.subnormals`)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

from server.retrieval.bundles import BundleError

log = logging.getLogger(__name__)


def single_thread_session(path: Path, what: str) -> ort.InferenceSession:
    """A session for the model at ``path``; `BundleError` naming ``what`` when it cannot be loaded.

    One intra-op and one inter-op thread: a second thread never helped a single request on these machines
    (DESIGN.md), and several server processes share the cores instead. Subnormal weights are zeroed first (a
    bundle written by an older trainer, or by another tool, may hold some): same scores, and on Intel CPUs several
    times faster.
    """
    # Imported here: only loading a bundle needs the model's protobuf (about 0.2 s to import).
    import onnx

    from server.retrieval.subnormals import flush_subnormal_weights

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        model = onnx.load(str(path))
        flushed = flush_subnormal_weights(model)
        if flushed:
            log.warning(
                "%s: %d subnormal weights of the %s set to zero (they change no score and slow every call on "
                "Intel CPUs); a bundle from this version's trainer has none",
                path,
                flushed,
                what,
            )
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and onnxruntime raise their own untyped errors for bad models
        raise BundleError(f"{path}: cannot load the {what}: {exc}") from exc
