"""Learned retrieval's per-request cost: the user tower in ONNX Runtime, and FAISS top-100, flat vs HNSW.

    python -m loadtest.two_tower_latency [--bundle DIR] [--sizes 100000,1000000] [--queries 2000]

Batch 1, one thread (ONNX Runtime and FAISS each on one thread, as the server runs them), one call at a time;
p50/p99 over ``--queries`` calls after a warm-up. Prints a markdown table.

- The tower: `TwoTowerRetriever.encode` (filling the input arrays included) on sequences of 1..max_len random
  items of the bundle, then `search` for 100 on the bundle's own index. Without ``--bundle`` the tower is
  the synthetic mean-pooling tower of ``loadtest.harness.bundles`` (not a trained attention tower: say so when
  quoting it).
- FAISS at each size: an exact ``IndexFlatIP`` and an ``IndexHNSWFlat`` (inner product, M=32,
  efConstruction=80) searched at several ``efSearch``; recall@100 is the share of the exact top 100 that HNSW
  finds, over the same queries. With ``--bundle`` the items are the bundle's real item embeddings, resampled
  with small noise up to each size, and the queries are the tower's user vectors; without, synthetic clustered
  embeddings of dimension 64 (1,000 clusters) and queries drawn like users who browse 1 to 10 items.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from feature_worker.fold import VIEW
from loadtest.stats import summarize_ms
from server.retrieval.bundles import BundlePaths
from server.retrieval.two_tower import TwoTowerRetriever

TOP = 100
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = (64, 128, 256)
SYNTHETIC_DIM = 64
SYNTHETIC_CLUSTERS = 1000


def timed(call: Callable[[int], object], queries: int, warmup: int = 200) -> dict[str, float]:
    for q in range(warmup):
        call(q)
    samples = []
    for q in range(queries):
        started = time.perf_counter()
        call(q)
        samples.append(time.perf_counter() - started)
    return summarize_ms(samples)


def tower_rows(retriever: TwoTowerRetriever, queries: int, rng: np.random.Generator, label: str) -> list[str]:
    n = len(retriever.item_ids)
    lengths = rng.integers(1, retriever.max_len + 1, size=queries)
    sequences = [
        [(0, VIEW, retriever.item_ids[j]) for j in rng.integers(0, n, size=length)] for length in lengths
    ]
    encode = timed(lambda q: retriever.encode(sequences[q % queries], ()), queries)
    vectors = [v for v in (retriever.encode(s, ()) for s in sequences) if v is not None]
    search = timed(lambda q: retriever.search(vectors[q % len(vectors)], TOP, ()), queries)
    kind = type(retriever.index).__name__
    return [
        (
            f"| user tower ({label}, sequence ≤ {retriever.max_len}, dim {retriever.dim}) | {n:,} | "
            f"{encode['p50']:.3f} | {encode['p99']:.3f} | |"
        ),
        f"| bundle index {kind}, top {TOP} | {n:,} | {search['p50']:.3f} | {search['p99']:.3f} | 1.000 |",
    ]


def synthetic(size: int, queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item embeddings and user-like queries (means of 1..10 items of one or two clusters)."""
    centers = rng.standard_normal((SYNTHETIC_CLUSTERS, SYNTHETIC_DIM)).astype(np.float32)
    assign = rng.integers(0, SYNTHETIC_CLUSTERS, size=size)
    items = centers[assign] + 0.5 * rng.standard_normal((size, SYNTHETIC_DIM)).astype(np.float32)
    picks = [rng.integers(0, size, size=int(rng.integers(1, 11))) for _ in range(queries)]
    users = np.stack([items[p].mean(axis=0) for p in picks]).astype(np.float32)
    return np.ascontiguousarray(items), users


def resampled(base: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows drawn from ``base``, plus noise at a tenth of each dimension's spread."""
    rows = base[rng.integers(0, len(base), size=size)]
    noise = rng.standard_normal(rows.shape).astype(np.float32) * (0.1 * base.std(axis=0, keepdims=True))
    return np.ascontiguousarray(rows + noise, dtype=np.float32)


def index_rows(items: np.ndarray, users: np.ndarray) -> list[str]:
    size, dim = items.shape
    queries = len(users)
    flat = faiss.IndexFlatIP(dim)
    flat.add(items)
    one = [users[q : q + 1] for q in range(queries)]
    exact = [flat.search(u, TOP)[1][0] for u in one]
    stats = timed(lambda q: flat.search(one[q % queries], TOP), queries)
    out = [f"| FAISS flat (exact), top {TOP} | {size:,} | {stats['p50']:.3f} | {stats['p99']:.3f} | 1.000 |"]
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = EF_CONSTRUCTION
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # build with every core; searches run on one
    hnsw.add(items)
    faiss.omp_set_num_threads(1)
    built = time.perf_counter() - started
    for ef in EF_SEARCH:
        hnsw.hnsw.efSearch = ef
        found = [hnsw.search(u, TOP)[1][0] for u in one]
        recall = float(np.mean([len(set(f.tolist()) & set(e.tolist())) / TOP for f, e in zip(found, exact)]))
        stats = timed(lambda q: hnsw.search(one[q % queries], TOP), queries)
        out.append(
            f"| FAISS HNSW M={HNSW_M} efSearch={ef} (built in {built:.0f} s) | {size:,} | "
            f"{stats['p50']:.3f} | {stats['p99']:.3f} | {recall:.3f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.two_tower_latency", description=__doc__)
    parser.add_argument("--bundle", type=Path, help="a model bundle directory (default: synthetic data)")
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated item counts for FAISS")
    parser.add_argument("--queries", type=int, default=2000, help="timed calls per row")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    faiss.omp_set_num_threads(1)
    lines = [
        "| what (batch 1, one thread) | items | p50 ms | p99 ms | recall@100 vs flat |",
        "|---|---:|---:|---:|---:|",
    ]
    if args.bundle is not None:
        retriever = TwoTowerRetriever.load(BundlePaths(args.bundle))
        print(
            f"bundle {retriever.version}: {len(retriever.item_ids):,} items, dim {retriever.dim}; "
            f"FAISS rows use its item embeddings resampled with noise, queries are its tower's user vectors"
        )
        lines += tower_rows(retriever, args.queries, rng, f"bundle {retriever.version}")
        base = retriever.index.reconstruct_n(0, retriever.index.ntotal)
        lengths = rng.integers(1, retriever.max_len + 1, size=args.queries)
        n = len(retriever.item_ids)
        vectors = [
            retriever.encode([(0, VIEW, retriever.item_ids[j]) for j in rng.integers(0, n, size=length)], ())
            for length in lengths
        ]
        users = np.concatenate([v for v in vectors if v is not None]).astype(np.float32)
        for size in sizes:
            lines += index_rows(resampled(base, size, rng), users)
    else:
        # The synthetic tower is built with the onnx package (the train extra), so only here.
        from loadtest.harness.bundles import write_bundle

        print(
            f"synthetic data: clustered item embeddings of dimension {SYNTHETIC_DIM} "
            f"({SYNTHETIC_CLUSTERS:,} clusters); the tower is loadtest.harness.bundles's mean-pooling tower, "
            "not a trained attention tower"
        )
        with tempfile.TemporaryDirectory() as tmp:
            items, _ = synthetic(12_000, 1, rng)
            paths = write_bundle(
                Path(tmp), "synthetic", [f"i{j}" for j in range(len(items))], items, max_len=50
            )
            lines += tower_rows(TwoTowerRetriever.load(paths), args.queries, rng, "synthetic mean pooling")
        for size in sizes:
            items, users = synthetic(size, args.queries, rng)
            lines += index_rows(items, users)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
