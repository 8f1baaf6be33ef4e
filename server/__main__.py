"""`python -m server --host H --port P [--data-dir DIR] [--bundles DIR] [--env-file FILE]`: serve Aisle until
SIGINT/SIGTERM.

Kafka + Redis mode when `AISLE_KAFKA_BOOTSTRAP` and `AISLE_REDIS_URL` are set (environment or env file),
embedded otherwise."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

import uvloop

from feature_worker.privacy.vault import EncryptionNotConfigured
from server.app import start, stop
from server.config import ConfigError, ServerSettings


def parse_args(argv: list[str]) -> tuple[ServerSettings, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m server", description="Aisle gRPC recommendation server")
    parser.add_argument("--host", help="address to bind (AISLE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind, 0 for any free one (AISLE_PORT, default 50051)")
    parser.add_argument("--data-dir", type=Path, help="where the embedded journal lives (AISLE_DATA_DIR)")
    parser.add_argument("--lists-refresh-s", type=float, help="rebuild popular/trending lists this often")
    parser.add_argument(
        "--bundles", dest="bundles_dir", help="serve the model bundle promoted here, hot-swapping (AISLE_BUNDLES_DIR)"
    )
    parser.add_argument("--bundle-poll-s", type=float, help="check for a newly promoted bundle this often")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving (for tools)")
    parser.add_argument("--env-file", type=Path, help="read AISLE_* settings from this file too (default .env)")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in ServerSettings.model_fields
    }
    if args.env_file is not None:
        overrides["_env_file"] = args.env_file
    return ServerSettings(**overrides), args.port_file  # type: ignore[arg-type]


async def serve(settings: ServerSettings, port_file: Path | None) -> None:
    running = await start(settings)
    # What start-up built (catalog, users, replayed state, modules) lives as long as the process: keep the
    # collector from scanning it again and again, which otherwise costs tens of ms per full collection.
    gc.freeze()
    # Background work in threads (the popular/trending rebuild) hands the GIL back to the event loop
    # every millisecond instead of every five, so requests wait less behind it.
    sys.setswitchinterval(0.001)
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
    try:
        uvloop.run(serve(settings, port_file))
    except ConfigError as exc:  # settings that cannot work: say which, without a traceback
        sys.exit(f"python -m server: {exc}")
    except EncryptionNotConfigured as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
