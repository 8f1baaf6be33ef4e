"""Start an embedded server loaded with a generated shop and keep it serving, for ghz and locust.

    python -m loadtest.serve_shop --shop DIR [--port 50051]

Loads the shop through the public API (catalog, users, then every event through Track), prints the
target, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from clients.client import AsyncAisleClient, ClientOptions
from clients.replay import replay
from server.process import ServerProcess
from trainer.data.generated import read_events, read_items, read_meta, read_users


async def load(target: str, shop: Path) -> None:
    async with AsyncAisleClient(ClientOptions(target=target, write_timeout_s=120)) as client:
        report = await replay(client, list(read_items(shop)), list(read_users(shop)), read_events(shop),
                              total_events=read_meta(shop)["events"])
    print(f"loaded {report.events:,} events, {report.users:,} users, {report.items:,} items in "
          f"{report.seconds:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.serve_shop")
    parser.add_argument("--shop", type=Path, required=True)
    parser.add_argument("--port", type=int, default=50051)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp), port=args.port, args=["--lists-refresh-s", "1"]).start()
        try:
            asyncio.run(load(server.target, args.shop))
            print(f"serving {args.shop} on {server.target} (Ctrl-C to stop)", flush=True)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


if __name__ == "__main__":
    main()
