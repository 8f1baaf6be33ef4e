"""Segment export rate: customers per second through `python -m clients export --segment ...`'s path.

    python -m loadtest.export_rate --shop DIR [--k 10] [--segment TERM ...] [--format jsonl]

Starts an embedded server on a free port, replays the shop into it (items, users with their attributes and
consent, events), then streams SegmentService.ExportRecommendations and writes every row as the CLI does (to a
temporary file), timing from the request to the last row. Without --segment every customer is exported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clients.client import AisleClient, ClientOptions
from clients.export import parse_segment, stream, write
from loadtest.harness.server import ServerProcess
from loadtest.shops import load_shop, loaded
from protos.aisle.v1 import segments_pb2


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.export_rate")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--segment", action="append", default=[])
    parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "server", args=["--lists-refresh-s", "1"]).start()
        try:
            print(loaded(load_shop(server.target, args.shop)))
            time.sleep(2)  # let the background refresh build popular/trending lists
            request = segments_pb2.ExportRecommendationsRequest(segment=parse_segment(args.segment), k=args.k)
            with (
                AisleClient(ClientOptions(target=server.target)) as client,
                open(Path(tmp) / f"export.{args.format}", "w") as out,
            ):
                started = time.perf_counter()
                summary = write(stream(client, request), out, args.format, args.k)
                seconds = time.perf_counter() - started
            print(
                f"segment {' '.join(args.segment) or '(everyone)'}: {summary.customers:,} customers of "
                f"{summary.total:,} in {seconds:.1f} s = {summary.customers / seconds:,.0f} customers/s "
                f"(k={args.k}, {args.format})"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
