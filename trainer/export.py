"""From a trained two-tower model to a bundle on disk: ONNX user tower, FAISS item index, ids, metadata.

Guarantees kept here:

- Parity: the ONNX user tower is run with ONNX Runtime on real validation sequences (short, long and one that
  is all padding) and must match PyTorch within ``PARITY_TOLERANCE`` (max absolute difference), else
  `ExportError` and no bundle.
- Recall: the index's recall@100 against exact inner-product search is measured on real user vectors and
  recorded in ``meta.json``; HNSW's ``efSearch`` is the smallest tried that reaches ``TARGET_RECALL``.
- Atomicity: the bundle is written into a hidden temporary directory beside its final place and renamed, so a
  reader (``server.retrieval.bundles.versions``, the server) never sees half a bundle; an existing version is never
  overwritten.

The layout and the names come from ``server.retrieval.bundles``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnx
import onnxruntime as ort
import torch

from server.retrieval import bundles
from server.retrieval.subnormals import flush_subnormal_weights
from trainer.models.two_tower import ServedUserTower, TwoTower, item_matrix
from trainer.preparation import Prepared, peak_rss_bytes

PARITY_TOLERANCE = 1e-4
TARGET_RECALL = 0.95
RECALL_K = 100
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
EF_SEARCH_TRIED = (32, 64, 128, 256, 512, 1024, 2048)
#: An inverted-file index must find this share of the exact top 100: it is the catalogue sizes between exact
#: search (slow beyond ~16k items) and HNSW, and its probes are cheap, so it is held higher than HNSW.
IVF_TARGET_RECALL = 0.99
#: Probed lists tried, smallest first.
NPROBE_TRIED = (4, 8, 16, 32, 64, 128)
#: Items per inverted list, about: sqrt(n) lists keep the coarse search and the list scans balanced.
IVF_MIN_LISTS, IVF_MAX_LISTS = 16, 4096
#: User vectors used to measure recall.
RECALL_QUERIES = 2000
ONNX_OPSET = 17
#: Sequences also checked unpadded (as the server feeds them) by `check_parity`.
TRIMMED_CHECKS = 64
#: Exact search up to this many items, an inverted file above (see `build_index`).
IVF_ABOVE = 16_384


class ExportError(Exception):
    """The export failed a check (ONNX parity, an existing version); the message says which."""


def default_version(now: datetime | None = None) -> str:
    """A version name from the UTC time, e.g. ``20261126T203000Z``."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def export_user_tower(model: TwoTower, path: Path, max_len: int) -> None:
    """Write the user tower (``ServedUserTower``) to ``path`` as ONNX, batch and sequence length dynamic.

    A dynamic length lets the server feed only a user's real interactions (newest last, positions counted back
    from the newest, so the output equals the left-padded one's): about half the time of a padded 50 for a
    dozen interactions. Inputs may still be left-padded to ``max_len`` (training and evaluation batches are).

    The TorchScript-based exporter (``dynamo=False``) is used: the dynamo exporter needs ``onnxscript``, which the
    ``[train]`` extra does not install, and the graph (gathers, matmuls, softmax, layer norms) is plain.
    """
    served = ServedUserTower(model).eval()
    items = torch.zeros(2, max_len, dtype=torch.int64)
    items[0, -3:] = torch.tensor([1, 2, 1])
    types = (items > 0).long() * 6
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter and its internals warn that they are deprecated; they are still the exporter that
        # needs no extra package, and the parity check below is what says the graph is right.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            served,
            (items, types),
            str(path),
            input_names=[bundles.INPUT_ITEMS, bundles.INPUT_TYPES],
            output_names=[bundles.OUTPUT_USER],
            dynamic_axes={
                bundles.INPUT_ITEMS: {0: "batch", 1: "length"},
                bundles.INPUT_TYPES: {0: "batch", 1: "length"},
                bundles.OUTPUT_USER: {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    # Subnormal weights cost a microcode assist per use on Intel CPUs (server.retrieval.subnormals).
    graph = onnx.load(str(path))
    if flush_subnormal_weights(graph):
        onnx.save(graph, str(path))


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session as the server runs it (CPU, ``threads`` intra-op threads)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_user_vectors(sess: ort.InferenceSession, items: np.ndarray, types: np.ndarray) -> np.ndarray:
    """User vectors of left-padded int64 sequences through the exported tower."""
    out = sess.run(
        [bundles.OUTPUT_USER],
        {bundles.INPUT_ITEMS: items.astype(np.int64), bundles.INPUT_TYPES: types.astype(np.int64)},
    )[0]
    return np.asarray(out, dtype=np.float32)


def torch_user_vectors(
    model: TwoTower, items: np.ndarray, types: np.ndarray, batch: int = 1024
) -> np.ndarray:
    """The same vectors from PyTorch (eval mode)."""
    model.eval()
    parts = []
    with torch.no_grad():
        for lo in range(0, len(items), batch):
            parts.append(
                model.user_vectors(
                    torch.from_numpy(items[lo : lo + batch]), torch.from_numpy(types[lo : lo + batch])
                ).numpy()
            )
    dim = model.config.dim
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)


def parity_sample(data: Prepared, max_len: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real validation sequences plus the edge cases: all padding, one event, a full row when there is one."""
    rng = np.random.default_rng(seed)
    n = len(data.valid_items)
    pick = np.sort(rng.choice(n, size=min(count, n), replace=False)) if n else np.zeros(0, dtype=np.int64)
    items = [data.valid_items[pick]] if n else []
    types = [data.valid_types[pick]] if n else []
    empty = np.zeros((1, max_len), dtype=np.int64)
    one_item, one_type = empty.copy(), empty.copy()
    one_item[0, -1], one_type[0, -1] = 1, 1
    items += [empty, one_item]
    types += [empty, one_type]
    if n:
        longest = int(np.argmax((data.valid_items > 0).sum(axis=1)))
        items.append(data.valid_items[longest : longest + 1])
        types.append(data.valid_types[longest : longest + 1])
    return np.concatenate(items), np.concatenate(types)


def check_parity(model: TwoTower, path: Path, items: np.ndarray, types: np.ndarray) -> float:
    """Max |ONNX - PyTorch| over the sample; `ExportError` above ``PARITY_TOLERANCE`` or on non-finite output."""
    expected = torch_user_vectors(model, items, types)
    sess = session(path)
    got = onnx_user_vectors(sess, items, types)
    if got.shape != expected.shape or not np.isfinite(got).all():
        raise ExportError(
            f"{path}: ONNX output shape {got.shape} or values differ from PyTorch {expected.shape}"
        )
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    # The server feeds a user's real interactions only, unpadded: those vectors must match the padded ones.
    for row in np.flatnonzero((items > 0).any(axis=1))[:TRIMMED_CHECKS]:
        real = int((items[row] > 0).sum())
        alone = onnx_user_vectors(sess, items[row : row + 1, -real:], types[row : row + 1, -real:])
        diff = max(
            diff, float(np.max(np.abs(alone[0] - expected[row]))) if np.isfinite(alone).all() else np.inf
        )
    if diff >= PARITY_TOLERANCE:
        raise ExportError(
            f"{path}: ONNX Runtime and PyTorch user vectors differ by {diff:.3g} (limit {PARITY_TOLERANCE:g})"
        )
    return diff


def recall_at(index: Any, exact: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Share of the exact top ``k`` that ``index`` finds, over ``queries``."""
    _, found = index.search(queries, k)
    hits = 0
    for row_found, row_exact in zip(found, exact, strict=True):
        hits += len(set(row_found.tolist()) & set(row_exact.tolist()))
    return hits / max(exact.size, 1)


def build_index(
    vectors: np.ndarray,
    queries: np.ndarray,
    hnsw_above: int,
    log: Callable[[str], None] = print,
    ivf_above: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """An inner-product FAISS index over ``vectors`` and ``{kind, recall_at_100, ...}`` measured on ``queries``
    (real user vectors).

    Exact ``IndexFlatIP`` up to ``ivf_above`` items (default `IVF_ABOVE`; exact search for one user costs about
    0.07 ms at 12k items and 0.11 ms at 20k on these machines, growing with the catalogue); above it an inverted
    file (``IndexIVFFlat``, about sqrt(n) lists) probing the fewest lists that reach `IVF_TARGET_RECALL`
    (measured on a 20k-item generated shop: 8 of 141 lists, recall 0.995, 0.04 ms). Above ``hnsw_above``
    ``IndexHNSWFlat`` is tried first, with the smallest ``efSearch`` that reaches ``TARGET_RECALL``. An index
    that misses its target is not served: the next tier is tried, and exact search is the last, with the
    rejected recalls recorded (``hnsw_rejected``, ``ivf_rejected``).
    """
    ivf_above = IVF_ABOVE if ivf_above is None else ivf_above
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, dim = vectors.shape
    k = min(RECALL_K, n)
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    _, exact = flat.search(queries, k) if len(queries) else (None, np.zeros((0, k), dtype=np.int64))
    rejected: dict[str, Any] = {}
    if n > hnsw_above:
        hnsw, hnsw_meta = _hnsw(vectors, exact, queries, k, log)
        if hnsw_meta["recall_at_100"] >= TARGET_RECALL:
            return hnsw, hnsw_meta
        rejected["hnsw_rejected"] = {key: hnsw_meta[key] for key in ("recall_at_100", "ef_search", "m")}
    if n > ivf_above and len(queries):
        ivf, ivf_meta = _ivf(vectors, exact, queries, k, log)
        if ivf_meta["recall_at_100"] >= IVF_TARGET_RECALL:
            return ivf, {**ivf_meta, **rejected}
        rejected["ivf_rejected"] = {key: ivf_meta[key] for key in ("recall_at_100", "nprobe", "nlist")}
    recall = recall_at(flat, exact, queries, k)
    return flat, {"kind": "IndexFlatIP", "recall_at_100": recall, "ef_search": None, **rejected}


def _sweep(
    name: str,
    tried: Sequence[int],
    usable: Callable[[int], bool],
    recall_with: Callable[[int], float],
    target: float,
    k: int,
    log: Callable[[str], None],
) -> tuple[int, float]:
    """The first `usable` value of ``tried`` (smallest first) whose recall@k (`recall_with`, which sets it on
    the index) reaches ``target``, and that recall; else the last usable one and its recall (the last of ``tried``
    and 0.0 when none is usable). Each value tried is logged as the index's setting ``name``."""
    recall = 0.0
    chosen = tried[-1]
    for value in tried:
        if not usable(value):
            continue
        recall = recall_with(value)
        log(f"  {name} {value}: recall@{k} {recall:.4f}")
        chosen = value
        if recall >= target:
            break
    return chosen, recall


def _hnsw(
    vectors: np.ndarray, exact: np.ndarray, queries: np.ndarray, k: int, log: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    n, dim = vectors.shape
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(vectors)
    log(f"HNSW index over {n:,} items built in {time.perf_counter() - started:.1f} s")

    def recall_with(ef: int) -> float:
        hnsw.hnsw.efSearch = ef
        return recall_at(hnsw, exact, queries, k)

    # An efSearch below k cannot return k neighbours.
    chosen, recall = _sweep(
        "efSearch", EF_SEARCH_TRIED, lambda ef: ef >= k, recall_with, TARGET_RECALL, k, log
    )
    if recall < TARGET_RECALL:
        # Inner-product HNSW graphs navigate badly when item norms vary (measured on a 100k-item generated shop:
        # recall@100 0.71 at efSearch 128, 0.79 at 2048). A retrieval that silently misses a fifth of the top
        # 100 is worse than a slower one, so the next tier serves and the reason is recorded.
        log(f"  HNSW recall@{k} {recall:.4f} < {TARGET_RECALL} at efSearch {chosen}: not served")
    hnsw.hnsw.efSearch = chosen
    return hnsw, {
        "kind": "IndexHNSWFlat",
        "recall_at_100": recall,
        "ef_search": chosen,
        "m": HNSW_M,
        "ef_construction": HNSW_EF_CONSTRUCTION,
    }


def _ivf(
    vectors: np.ndarray, exact: np.ndarray, queries: np.ndarray, k: int, log: Callable[[str], None]
) -> tuple[Any, dict[str, Any]]:
    n, dim = vectors.shape
    nlist = int(min(IVF_MAX_LISTS, max(IVF_MIN_LISTS, round(math.sqrt(n)))))
    started = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = 1234  # k-means is seeded: the same vectors give the same index
    ivf.train(vectors)
    ivf.add(vectors)
    log(f"IVF index over {n:,} items, {nlist} lists, built in {time.perf_counter() - started:.1f} s")

    def recall_with(nprobe: int) -> float:
        ivf.nprobe = nprobe
        return recall_at(ivf, exact, queries, k)

    # Probing more lists than there are is not a setting.
    chosen, recall = _sweep(
        "nprobe", NPROBE_TRIED, lambda nprobe: nprobe <= nlist, recall_with, IVF_TARGET_RECALL, k, log
    )
    ivf.nprobe = chosen
    return ivf, {
        "kind": "IndexIVFFlat",
        "recall_at_100": recall,
        "ef_search": None,
        "nlist": nlist,
        "nprobe": chosen,
    }


def write_bundle(
    model: TwoTower,
    data: Prepared,
    out: Path,
    *,
    version: str | None = None,
    data_meta: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    train_seconds: float = 0.0,
    hnsw_above: int = 50_000,
    ivf_above: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    started: float | None = None,
    second_stage: Callable[[bundles.BundlePaths], dict[str, Any]] | None = None,
) -> bundles.BundlePaths:
    """Export ``model`` and write the bundle ``out/version`` (see the module docstring); return its paths.

    ``second_stage`` runs on the complete first-stage bundle before it is renamed into place (item transitions and
    the re-ranker, `trainer.ranker_stage`): it may add files, and what it returns is added to ``meta.json``.
    """
    version = bundles.check_version(version or default_version())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = bundles.bundle(out, version)
    if final.root.exists():
        raise ExportError(
            f"{final.root} exists already: bundles are never overwritten; pick another --version"
        )
    tmp = bundles.BundlePaths(out / f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp.root, ignore_errors=True)
    tmp.root.mkdir()
    try:
        max_len = model.config.max_len
        export_started = time.perf_counter()
        export_user_tower(model, tmp.user_tower, max_len)
        items, types = parity_sample(data, max_len, 512, seed)
        diff = check_parity(model, tmp.user_tower, items, types)
        log(
            f"ONNX user tower written; parity with PyTorch: max abs diff {diff:.2e} over {len(items)} sequences"
        )

        vectors = item_matrix(model)
        q_items, q_types = parity_sample(data, max_len, RECALL_QUERIES, seed + 1)
        queries = torch_user_vectors(model, q_items, q_types)
        index, index_meta = build_index(vectors, queries, hnsw_above, log, ivf_above)
        faiss.write_index(index, str(tmp.item_index))
        log(f"FAISS {index_meta['kind']}: recall@100 {index_meta['recall_at_100']:.4f}")

        tmp.item_ids.write_text("".join(item + "\n" for item in data.vocab.item_ids), encoding="utf-8")
        meta = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "max_len": max_len,
            "dim": model.config.dim,
            "items": data.vocab.size,
            "index": index_meta,
            "data": data_meta or {},
            "params": params or {},
            "metrics": metrics or {},
            "train_seconds": round(train_seconds, 3),
            "export_seconds": round(time.perf_counter() - export_started, 3),
            "onnx_parity_max_abs_diff": diff,
            "peak_rss_bytes": peak_rss_bytes(),
        }
        if started is not None:
            meta["total_seconds"] = round(time.perf_counter() - started, 3)
        tmp.meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if second_stage is not None:
            meta.update(second_stage(tmp))
            if started is not None:
                meta["total_seconds"] = round(time.perf_counter() - started, 3)
            meta["peak_rss_bytes"] = peak_rss_bytes()
            tmp.meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.check()
        _fsync_dir_files(tmp.root)
        os.rename(tmp.root, final.root)
        _fsync_dir(out)
    except BaseException:
        shutil.rmtree(tmp.root, ignore_errors=True)
        raise
    log(f"bundle {version} written to {final.root}")
    return final


def _fsync_dir_files(root: Path) -> None:
    # A bundle must be whole on disk before its name appears: fsync each file, then the directory.
    for path in root.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
