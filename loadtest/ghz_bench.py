"""Recommend under ghz: against the empty call, open loop at a fixed rate, and the highest rate within a p99.

    python -m loadtest.ghz_bench --target 127.0.0.1:50090 [--users 100000] [--metrics URL]
        [--phases ratio,open,sweep] [--rounds 4] [--calls 2500] [--rps 500] [--duration-s 20]
        [--p99-ms 10] [--sweep-start 200] [--sweep-duration-s 10] [--connections 4] [--call recommend]

Three phases, each a set of ghz runs (through server reflection, so no proto files) against one server on
this host (targets are refused unless they are 127.0.0.1 or localhost):

- ``ratio``: one client (one connection, one call at a time). ``--rounds`` rounds, each ``--calls`` calls of
  ``grpc.health.v1.Health/Check`` (the empty call: the framework's own cost) and as many of Recommend, in
  alternating order, so both see the same machine; prints p50/p99 of each and the ratios Recommend / empty.
- ``open``: ``--rps`` calls per second offered open loop (``ghz --rps --async``: calls start on schedule whether
  or not earlier ones have answered) for ``--duration-s``; prints the achieved rate and p50/p99.
- ``sweep``: the same open loop at rising rates (x1.25 from ``--sweep-start``; halving instead while even that
  fails) until p99 exceeds ``--p99-ms``, the achieved rate falls under 95 % of the offered one, or a call fails;
  then halves the gap between the best passing and the first failing rate twice. Prints every point and the highest rate that passed.

``--call empty`` runs the open loop and the sweep on the empty call instead of Recommend: what the framework itself
holds on this box, the ceiling any method's rate is measured against (as ``ratio`` measures latency against it).

Recommend asks for k=10 with explanations for users drawn at random from u1..u``--users`` (a generated shop's
ids). With ``--metrics`` (the server's `/metrics`) each phase also prints the server's own breakdown
(`loadtest.server_metrics`). ghz is looked for in ``--ghz``, ``$GHZ``, ``PATH`` and ``~/.cache/aisle/ghz/``, and
installed there with ``go install`` when missing (`GHZ_VERSION`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.harness.cpus import HELP, pin_client
from loadtest.server_metrics import Scrape, breakdown, scrape

GHZ_VERSION = "v0.120.0"
GHZ_CACHE = Path.home() / ".cache" / "aisle" / "ghz"
RECOMMEND = "aisle.v1.RecommendationService.Recommend"
HEALTH = "grpc.health.v1.Health.Check"
CALL_NAMES = {RECOMMEND: "Recommend", HEALTH: "Health/Check (the empty call)"}
CALLS = {"recommend": RECOMMEND, "empty": HEALTH}


def find_ghz(explicit: str | None) -> str:
    """The ghz binary; installs `GHZ_VERSION` into `GHZ_CACHE` with `go install` when there is none."""
    for candidate in (explicit, os.environ.get("GHZ"), shutil.which("ghz"), str(GHZ_CACHE / "ghz")):
        if candidate and Path(candidate).is_file():
            return candidate
    if shutil.which("go") is None:
        sys.exit(f"ghz not found and no Go toolchain to install it: install ghz {GHZ_VERSION} and pass --ghz")
    print(f"installing ghz {GHZ_VERSION} into {GHZ_CACHE}", flush=True)
    GHZ_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"],
        check=True,
        env={**os.environ, "GOBIN": str(GHZ_CACHE)},
    )
    return str(GHZ_CACHE / "ghz")


@dataclass
class Run:
    """One ghz run: latencies of the calls that answered OK, and what else happened."""

    latencies_s: np.ndarray
    count: int
    errors: int
    seconds: float
    statuses: dict[str, int]

    @property
    def rate(self) -> float:
        """Calls answered OK per second."""
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0

    def failures(self) -> str:
        failed = {status: n for status, n in self.statuses.items() if status != "OK"}
        return ", ".join(f"{n} {status}" for status, n in sorted(failed.items())) or "none"

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1000 if len(self.latencies_s) else float("nan")


class Ghz:
    def __init__(self, binary: str, target: str, users: int, connections: int) -> None:
        self.binary, self.target, self.users, self.connections = binary, target, users, connections

    def run(self, call: str, *options: str) -> Run:
        user = "u{{randomInt 1 %s}}".replace(
            "%s", str(self.users + 1)
        )  # a ghz template: a random user per call
        data = json.dumps({"user_id": user, "k": 10, "explain": True}) if call == RECOMMEND else "{}"
        result = subprocess.run(
            [
                self.binary,
                "--insecure",
                "--call",
                call,
                "--data",
                data,
                "--format",
                "json",
                *options,
                self.target,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if not result.stdout.strip():
            sys.exit(f"ghz failed ({result.returncode}): {result.stderr.strip()}")
        report = json.loads(result.stdout)
        details = report.get("details") or []
        ok = np.array([d["latency"] / 1e9 for d in details if d.get("status") == "OK"])
        statuses: dict[str, int] = {}
        for d in details:
            statuses[d.get("status") or "?"] = statuses.get(d.get("status") or "?", 0) + 1
        return Run(ok, int(report["count"]), len(details) - len(ok), report["total"] / 1e9, statuses)

    def closed(self, call: str, calls: int, skip: int) -> Run:
        """One connection, one call at a time."""
        return self.run(
            call,
            "--connections",
            "1",
            "--concurrency",
            "1",
            "--total",
            str(calls + skip),
            "--skipFirst",
            str(skip),
        )

    def open_loop(self, rps: int, duration_s: float, call: str = RECOMMEND) -> Run:
        """`call` offered at `rps` calls/s whatever the answers do, over `self.connections` connections."""
        # Calls in flight when the duration ends are waited for and counted ("wait"), not cancelled as errors.
        return self.run(
            call,
            "--async",
            "--rps",
            str(rps),
            "--duration",
            f"{duration_s}s",
            "--duration-stop",
            "wait",
            "--connections",
            str(self.connections),
            "--concurrency",
            str(self.connections),
        )


def server_view(metrics: str | None, before: Scrape | None) -> None:
    if metrics and before is not None:
        print(breakdown(before, scrape(metrics)), flush=True)


def ratio_phase(ghz: Ghz, rounds: int, calls: int, metrics: str | None) -> None:
    print(
        f"\n## Recommend against the empty call: one client, {rounds} rounds of {calls:,} calls each",
        flush=True,
    )
    latencies: dict[str, list[np.ndarray]] = {RECOMMEND: [], HEALTH: []}
    before = scrape(metrics) if metrics else None
    for r in range(rounds):
        for call in (HEALTH, RECOMMEND) if r % 2 == 0 else (RECOMMEND, HEALTH):
            run = ghz.closed(call, calls, skip=200)
            if run.errors:
                sys.exit(f"{run.errors} failed calls of {call}")
            latencies[call].append(run.latencies_s)
    rec, empty = np.concatenate(latencies[RECOMMEND]) * 1000, np.concatenate(latencies[HEALTH]) * 1000
    print("| call | calls | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for name, ms in (("Health/Check (empty)", empty), ("Recommend", rec)):
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"| {name} | {len(ms):,} | {p50:.3f} | {p90:.3f} | {p99:.3f} |")
    p50_ratio = np.percentile(rec, 50) / np.percentile(empty, 50)
    p99_ratio = np.percentile(rec, 99) / np.percentile(empty, 99)
    print(f"\nRecommend / empty call: p50 {p50_ratio:.2f}x, p99 {p99_ratio:.2f}x", flush=True)
    server_view(metrics, before)


def open_phase(ghz: Ghz, rps: int, duration_s: float, metrics: str | None, call: str = RECOMMEND) -> None:
    print(
        f"\n## Open loop: {CALL_NAMES[call]} offered {rps}/s for {duration_s:g} s over {ghz.connections} connections",
        flush=True,
    )
    before = scrape(metrics) if metrics else None
    run = ghz.open_loop(rps, duration_s, call)
    print(
        f"achieved {run.rate:,.0f} calls/s answered OK ({run.count:,} calls; failed: {run.failures()}): "
        f"p50 {run.p(50):.3f} ms, p90 {run.p(90):.3f} ms, p99 {run.p(99):.3f} ms",
        flush=True,
    )
    server_view(metrics, before)


def sweep_phase(ghz: Ghz, start: int, duration_s: float, p99_ms: float, call: str = RECOMMEND) -> None:
    print(
        f"\n## Rate sweep, {CALL_NAMES[call]}: highest offered rate with p99 <= {p99_ms:g} ms "
        f"({duration_s:g} s per rate)",
        flush=True,
    )
    print("| offered/s | achieved/s | failed | p50 ms | p99 ms | within |\n|---:|---:|---:|---:|---:|---|")

    def passes(rate: int) -> bool:
        run = ghz.open_loop(rate, duration_s, call)
        ok = run.errors == 0 and run.rate >= 0.95 * rate and run.p(99) <= p99_ms
        print(
            f"| {rate:,} | {run.rate:,.0f} | {run.errors} | {run.p(50):.3f} | {run.p(99):.3f} | "
            f"{'yes' if ok else 'no'} |",
            flush=True,
        )
        return ok

    best, failed = 0, start
    if passes(start):  # up until a rate fails
        best, failed = start, int(start * 1.25)
        while passes(failed):
            best, failed = failed, int(failed * 1.25)
    else:  # down until one passes
        rate = start // 2
        while rate >= 10:
            if passes(rate):
                best = rate
                break
            failed, rate = rate, rate // 2
    for _ in range(2):
        if best == 0:
            break
        middle = (best + failed) // 2
        if middle in (best, failed):
            break
        if passes(middle):
            best = middle
        else:
            failed = middle
    print(
        f"\nhighest rate within p99 {p99_ms:g} ms: {best:,}/s"
        if best
        else f"\nno rate tried kept p99 within {p99_ms:g} ms (the lowest: {failed}/s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.ghz_bench")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--users", type=int, default=100_000, help="draw users from u1..uN")
    parser.add_argument("--metrics", help="the server's /metrics URL, for its side of each phase")
    parser.add_argument("--phases", default="ratio,open,sweep")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=2500, help="calls per round and method (ratio)")
    parser.add_argument("--rps", type=int, default=500, help="offered rate of the open-loop phase")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--p99-ms", type=float, default=10.0)
    parser.add_argument("--sweep-start", type=int, default=200)
    parser.add_argument("--sweep-duration-s", type=float, default=10.0)
    parser.add_argument(
        "--connections", type=int, default=4, help="open loop: connections (spread over --workers)"
    )
    parser.add_argument(
        "--call",
        choices=sorted(CALLS),
        default="recommend",
        help="open loop and sweep: Recommend, or the empty call (Health/Check) for the framework's own ceiling",
    )
    parser.add_argument("--ghz", help="path of the ghz binary")
    parser.add_argument("--client-cpus", help=HELP)
    args = parser.parse_args()
    pin_client(args.client_cpus, parser)  # ghz, started later, inherits it
    host = args.target.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"refusing to load {args.target}: this tool only loads a server on this host (127.0.0.1)")
    ghz = Ghz(find_ghz(args.ghz), args.target, args.users, args.connections)
    phases = set(args.phases.split(","))
    if "ratio" in phases:
        ratio_phase(ghz, args.rounds, args.calls, args.metrics)
    if "open" in phases:
        open_phase(ghz, args.rps, args.duration_s, args.metrics, CALLS[args.call])
    if "sweep" in phases:
        sweep_phase(ghz, args.sweep_start, args.sweep_duration_s, args.p99_ms, CALLS[args.call])


if __name__ == "__main__":
    main()
