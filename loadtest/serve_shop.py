"""Start an embedded server loaded with a generated shop and keep it serving, for ghz and locust.

    python -m loadtest.serve_shop --shop DIR [--port 50051] [--metrics-port 9464] [--bundles DIR]

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
from pathlib import Path

from loadtest.harness.server import ServerProcess
from loadtest.server_metrics import scrape
from loadtest.shops import load_shop, loaded


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.serve_shop")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (0: none)")
    parser.add_argument("--bundles", type=Path, help="serve the bundle promoted in this directory")
    args = parser.parse_args()
    bundle_args = ["--bundles", str(args.bundles.resolve())] if args.bundles else []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # kill PID stops the server too (the finally below)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            Path(tmp),
            port=args.port,
            metrics_port=args.metrics_port,
            args=["--lists-refresh-s", "1", *bundle_args],
        ).start()
        try:
            print(loaded(load_shop(server.target, args.shop)), flush=True)
            if args.metrics_port:
                if args.bundles:
                    wait_for_proposals(server.metrics_url)
                wait_for_neighbour_lists(server.metrics_url)
            metrics = f", metrics on {server.metrics_url}" if args.metrics_port else ""
            print(f"serving {args.shop} on {server.target}{metrics} (Ctrl-C to stop)", flush=True)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


def wait_for_proposals(metrics_url: str, timeout_s: float = 1800.0) -> None:
    """Wait until the server's warmer has no user state left to compute (or it exports no such gauge)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        now = scrape(metrics_url)
        pending = now.gauge_sum("aisle_learned_proposals_pending")
        if pending is None or pending == 0:
            cached = now.gauge_sum("aisle_learned_proposals_cached")
            print(f"learned proposals ready for {cached or 0:,.0f} user states", flush=True)
            return
        time.sleep(1.0)
    print(f"learned proposals still pending after {timeout_s:.0f} s; serving anyway", flush=True)


def wait_for_neighbour_lists(metrics_url: str, timeout_s: float = 600.0) -> None:
    """Wait until the server has ranked every co-visitation list the load changed (or exports no such gauge)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        now = scrape(metrics_url)
        unranked = now.gauge_sum("aisle_neighbour_lists_unranked")
        if unranked is None or unranked == 0:
            ranked = now.counter_sum("aisle_neighbour_lists_ranked")
            print(f"co-visitation lists ranked in idle time: {ranked:,.0f}", flush=True)
            return
        time.sleep(1.0)
    print(f"co-visitation lists still unranked after {timeout_s:.0f} s; serving anyway", flush=True)


if __name__ == "__main__":
    main()
