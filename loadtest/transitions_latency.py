"""The item-transition source's per-request cost: `ItemTransitions.top` in process, batch 1, one thread.

    python -m loadtest.transitions_latency [--file transitions.npz] [--items 20000] [--neighbours 150] \\
        [--recent 1,10,50] [--top 100] [--queries 5000]

With ``--file`` the neighbour lists of a fitted model (``python -m trainer.models.transitions``); without, random
lists of ``--neighbours`` items per item over ``--items`` items (the model's vocabulary cap) read with the
default window and decay, which cost the same: the work is a gather of ``recent x neighbours`` entries, one ``bincount`` over the items and a partial sort
of the hits. Each query is a ``UserState.recent`` of that many random known items; p50/p99 over ``--queries``
calls after a warm-up, the input loop over ``recent`` included. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from feature_worker.fold import VIEW
from loadtest.stats import summarize_ms
from server.retrieval.transitions import ItemTransitions
from trainer.models.transitions import TransitionParams


def synthetic(items: int, neighbours: int, seed: int = 0) -> ItemTransitions:
    """Random neighbour lists: ``neighbours`` distinct items per item, positive weights."""
    rng = np.random.default_rng(seed)
    indices = np.concatenate([rng.choice(items, neighbours, replace=False) for _ in range(items)])
    data = rng.random(len(indices), dtype=np.float32) + 1e-3
    indptr = np.arange(0, items * neighbours + 1, neighbours)
    defaults = TransitionParams()
    return ItemTransitions(
        [f"i{i}" for i in range(items)], indptr, indices, data, defaults.decay, defaults.window
    )


def measure(
    model: ItemTransitions, recent_len: int, top: int, queries: int, seed: int = 1
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ids = model.item_ids
    inputs = [
        [(1_000 * p, VIEW, ids[int(i)]) for p, i in enumerate(rng.integers(0, len(ids), recent_len))]
        for _ in range(queries)
    ]
    for recent in inputs[: min(200, queries)]:
        model.top(recent, (), top)
    samples: list[float] = []
    clock = time.perf_counter
    for recent in inputs:
        t = clock()
        model.top(recent, (), top)
        samples.append(clock() - t)
    return summarize_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file", type=Path, help="a transitions.npz (default: synthetic lists)")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--neighbours", type=int, default=150)
    parser.add_argument(
        "--recent", default="1,10,50", help="comma-separated lengths of the user's recent items"
    )
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--queries", type=int, default=5_000)
    args = parser.parse_args()
    model = ItemTransitions.load(args.file) if args.file else synthetic(args.items, args.neighbours)
    width = model.neighbours.shape[1]
    source = str(args.file) if args.file else "synthetic"
    print(f"{source}: {model.size:,} items, up to {width} neighbours each, top {args.top}\n")
    print("| recent items | p50 ms | p90 ms | p99 ms | mean ms |")
    print("|---:|---:|---:|---:|---:|")
    for length in (int(x) for x in args.recent.split(",")):
        s = measure(model, length, args.top, args.queries)
        print(f"| {length} | {s['p50']:.4f} | {s['p90']:.4f} | {s['p99']:.4f} | {s['mean']:.4f} |")


if __name__ == "__main__":
    main()
