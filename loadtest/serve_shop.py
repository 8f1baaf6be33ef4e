"""Start an embedded server loaded with a generated shop and keep it serving, for ghz and locust.

    python -m loadtest.serve_shop --shop DIR [--port 50051] [--metrics-port 9464] [--bundles DIR] [--cpus LIST]

Loads the shop through the public API (catalog, users, then every event through Track), prints the
target (and the `/metrics` URL with --metrics-port), and serves until Ctrl-C. With --bundles the server
serves the bundle promoted there (learned retrieval); with --metrics-port too, "serving" is printed only once
the server has computed every loaded user's learned proposals (`aisle_learned_proposals_pending` 0); with
--metrics-port, only once it has also ranked in idle time the co-visitation lists the load changed
(`aisle_neighbour_lists_unranked` 0, seconds after the load). A measurement that starts then sees the steady
state of a shop whose users are not acting.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loadtest.harness.server import ServerProcess
from loadtest.server_metrics import Scrape, scrape
from loadtest.shops import load_shop, loaded


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.serve_shop")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (0: none)")
    parser.add_argument("--bundles", type=Path, help="serve the bundle promoted in this directory")
    parser.add_argument(
        "--cpus", help="the server's --cpus: run it on these CPUs only, such as 1 (default: any)"
    )
    args = parser.parse_args()
    bundle_args = ["--bundles", str(args.bundles.resolve())] if args.bundles else []
    cpu_args = ["--cpus", args.cpus] if args.cpus else []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # kill PID stops the server too (the finally below)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            Path(tmp),
            port=args.port,
            metrics_port=args.metrics_port,
            args=["--lists-refresh-s", "1", *bundle_args, *cpu_args],
        ).start()
        try:
            print(loaded(load_shop(server.target, args.shop)), flush=True)
            if args.metrics_port:
                if args.bundles:
                    wait_for_zero(server.metrics_url, "aisle_learned_proposals_pending", proposals_ready)
                wait_for_zero(server.metrics_url, "aisle_neighbour_lists_unranked", lists_ready)
            metrics = f", metrics on {server.metrics_url}" if args.metrics_port else ""
            print(f"serving {args.shop} on {server.target}{metrics} (Ctrl-C to stop)", flush=True)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


def wait_for_zero(
    metrics_url: str, gauge: str, ready: Callable[[Scrape], str], timeout_s: float = 1800.0
) -> None:
    """Wait until the server's ``gauge`` (work it has left to do in the background) is 0, or it exports no such
    gauge; then print ``ready`` of the last scrape."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        now = scrape(metrics_url)
        left = now.gauge_sum(gauge)
        if left is None or left == 0:
            print(ready(now), flush=True)
            return
        time.sleep(1.0)
    print(f"{gauge} still above 0 after {timeout_s:.0f} s; serving anyway", flush=True)


def proposals_ready(now: Scrape) -> str:
    return (
        f"learned proposals ready for {now.gauge_sum('aisle_learned_proposals_cached') or 0:,.0f} user states"
    )


def lists_ready(now: Scrape) -> str:
    return f"co-visitation lists ranked in idle time: {now.counter_sum('aisle_neighbour_lists_ranked'):,.0f}"


if __name__ == "__main__":
    main()
