"""What exposure logging adds to Recommend: ghz against two servers loaded with the same shop, one logging
exposures (AISLE_EXPOSURES=true, the default) and one not (false), in alternating rounds so that both see the same
machine.

    python -m loadtest.exposure_cost --shop DIR [--rounds 6] [--calls 3000]

Each round: one client (one connection, one call at a time), `--calls` Recommend calls (k=10, explain, random
users of the shop) against each server, the order swapped every round. Prints p50/p99 of each server and the
difference, and the logging server's exposure counters (recorded, dropped, written) from its `/metrics`.
First it times, in process, what a Recommend itself pays for logging (`ExposureLog.record` of one answer of 10
items, with the tuple and the item-id list built as the engine builds them); ``--record-only`` stops there.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from loadtest.ghz_bench import HEALTH, RECOMMEND, Ghz, find_ghz
from loadtest.harness.server import ServerProcess, free_port
from loadtest.server_metrics import scrape
from loadtest.shops import load_shop, loaded
from server.experiments.exposures import ExposureLog, MemoryExposureSink
from server.recommender import Recommendation
from trainer.data.generated import read_meta


async def _record_cost(n: int) -> float:
    """Microseconds per answer spent on the request path by exposure logging (queue drained between batches)."""
    log = ExposureLog([MemoryExposureSink()], capacity=n + 1)
    items = [Recommendation(f"item-{i}", 1.0 - i / 10) for i in range(10)]
    pairs = (("exp", "treatment"),)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for i in range(n):
            log.record(
                (
                    f"{i:024x}",
                    "u1",
                    "",
                    1_767_225_600_000,
                    "exp/treatment",
                    pairs,
                    [r.item_id for r in items],
                    [],
                    "v1",
                    0,
                    800,
                    "",
                )
            )
        best = min(best, (time.perf_counter() - started) / n * 1e6)
        await log.flush()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.exposure_cost")
    parser.add_argument("--shop", type=Path, required=True, help="a generated shop (`trainer generate`)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument(
        "--ghz", help="the ghz binary (default: found or installed as loadtest.ghz_bench does)"
    )
    parser.add_argument("--record-only", action="store_true", help="only the in-process cost of recording")
    args = parser.parse_args()
    print(
        f"request path, in process: {asyncio.run(_record_cost(100_000)):.2f} us per answer "
        "(best of 5 x 100,000 ExposureLog.record calls)",
        flush=True,
    )
    if args.record_only:
        return
    binary = find_ghz(args.ghz)
    users = int(read_meta(args.shop)["users"])
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            logging: ServerProcess(
                Path(tmp) / name,
                metrics_port=free_port(),
                env={"AISLE_EXPOSURES": "true" if logging else "false", "AISLE_ENCRYPTION": "off"},
                args=["--lists-refresh-s", "1"],
            ).start()
            for logging, name in ((True, "with"), (False, "without"))
        }
        try:
            for server in servers.values():
                print(loaded(load_shop(server.target, args.shop)), flush=True)
            latencies: dict[bool, list[np.ndarray]] = {True: [], False: []}
            empty: list[np.ndarray] = []
            for r in range(args.rounds):
                for logging in (True, False) if r % 2 == 0 else (False, True):
                    ghz = Ghz(binary, servers[logging].target, users, 1)
                    run = ghz.closed(RECOMMEND, args.calls, skip=200)
                    if run.errors:
                        raise SystemExit(f"{run.errors} failed calls: {run.failures()}")
                    latencies[logging].append(run.latencies_s * 1000)
                empty.append(
                    Ghz(binary, servers[True].target, users, 1)
                    .closed(HEALTH, args.calls // 3, 100)
                    .latencies_s
                    * 1000
                )
            print("| server | calls | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|---:|")
            p50 = {}
            for logging in (False, True):
                ms = np.concatenate(latencies[logging])
                p50[logging], p90, p99 = np.percentile(ms, [50, 90, 99])
                name = "exposure logging on" if logging else "exposure logging off"
                print(f"| {name} | {len(ms):,} | {p50[logging]:.3f} | {p90:.3f} | {p99:.3f} |")
            e = np.concatenate(empty)
            print(
                f"| Health/Check (empty call) | {len(e):,} | {np.percentile(e, 50):.3f} | "
                f"{np.percentile(e, 90):.3f} | {np.percentile(e, 99):.3f} |"
            )
            per_round = [
                float(np.median(a) - np.median(b)) for a, b in zip(latencies[True], latencies[False])
            ]
            print(
                f"\np50 added by exposure logging: {p50[True] - p50[False]:+.4f} ms "
                f"(per round: {', '.join(f'{d:+.4f}' for d in per_round)})"
            )
            samples = scrape(servers[True].metrics_url)
            counters = {
                f"{name}{dict(labels) or ''}": value
                for (name, labels), value in samples.counters.items()
                if name.startswith("aisle_exposures")
            }
            print("exposure counters of the logging server:", counters)
        finally:
            for server in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
