"""`python -m server --host H --port P [--data-dir DIR]`: serve Aisle until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from server.app import start, stop
from server.config import ServerSettings


def parse_args(argv: list[str]) -> tuple[ServerSettings, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m server", description="Aisle gRPC recommendation server")
    parser.add_argument("--host", help="address to bind (AISLE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind, 0 for any free one (AISLE_PORT, default 50051)")
    parser.add_argument("--data-dir", type=Path, help="where the embedded journal lives (AISLE_DATA_DIR)")
    parser.add_argument("--lists-refresh-s", type=float, help="rebuild popular/trending lists this often")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving (for tools)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in ServerSettings.model_fields
    }
    return ServerSettings(**overrides), args.port_file


async def serve(settings: ServerSettings, port_file: Path | None) -> None:
    running = await start(settings)
    if port_file is not None:
        port_file.write_text(f"{running.port}\n")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print(f"Aisle serving on {settings.host}:{running.port}", flush=True)
    await stopping.wait()
    logging.getLogger(__name__).info("shutting down")
    await stop(running)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    settings, port_file = parse_args(argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve(settings, port_file))


if __name__ == "__main__":
    main()
