"""`python -m server --host H --port P [--workers N] [--metrics-port M] [--data-dir DIR] [--bundles DIR]
[--cpus LIST] [--env-file FILE]`: serve Aisle until SIGINT/SIGTERM.

Kafka + Redis mode when `AISLE_KAFKA_BOOTSTRAP` and `AISLE_REDIS_URL` are set (environment or env file),
embedded otherwise. `--workers N` (N > 1, Kafka + Redis mode only) runs N server processes on one port under a
supervising process (`server.workers`)."""

from __future__ import annotations

import os

# One thread per numeric library, set before numpy, ONNX Runtime and FAISS load: a request runs on one core, and
# idle OpenMP/BLAS threads spinning beside the event loop only steal it (DESIGN.md). Several processes
# (`--workers`) use the other cores. An operator's own setting wins.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import logging
import sys
from pathlib import Path

import uvloop

from feature_worker.privacy.vault import EncryptionNotConfigured
from server.affinity import check_available, pin_process
from server.app import serve
from server.config import ConfigError, ServerSettings
from server.dashboard.series import Sampler
from server.dashboard.web import Dashboard
from server.metrics import LiveCollector, ServerMetrics, serve_metrics
from server.workers import Supervisor

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_args(argv: list[str]) -> tuple[ServerSettings, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m server", description="Aisle gRPC recommendation server")
    parser.add_argument("--host", help="address to bind (AISLE_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help="port to bind, 0 for any free one (AISLE_PORT, default 50051)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, Kafka + Redis mode only (AISLE_WORKERS, default 1)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (AISLE_METRICS_PORT, default 0: off)",
    )
    parser.add_argument("--metrics-host", help="address of /metrics (AISLE_METRICS_HOST, default 127.0.0.1)")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        help="serve the live dashboard on this port (AISLE_DASHBOARD_PORT, default 0: off)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the embedded journal lives (AISLE_DATA_DIR)")
    parser.add_argument("--lists-refresh-s", type=float, help="rebuild popular/trending lists this often")
    parser.add_argument(
        "--bundles",
        dest="bundles_dir",
        help="serve the model bundle promoted here, hot-swapping (AISLE_BUNDLES_DIR)",
    )
    parser.add_argument("--bundle-poll-s", type=float, help="check for a newly promoted bundle this often")
    parser.add_argument(
        "--cpus",
        help="run on these CPUs only, a Linux CPU list such as 1 or 0-3; with --workers one CPU each, in turn "
        "(AISLE_CPUS, default: any)",
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving (for tools)")
    parser.add_argument(
        "--env-file", type=Path, help="read AISLE_* settings from this file too (default .env)"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {
        key: value
        for key, value in vars(args).items()
        if value is not None and key in ServerSettings.model_fields
    }
    if args.env_file is not None:
        overrides["_env_file"] = args.env_file
    settings = ServerSettings(**overrides)  # type: ignore[arg-type]
    if settings.workers > 1 and not settings.kafka_mode:
        parser.error(
            f"--workers {settings.workers} (AISLE_WORKERS) needs the Kafka + Redis mode (AISLE_KAFKA_BOOTSTRAP and "
            "AISLE_REDIS_URL): the embedded server keeps its journal and its features in one process, which "
            "several processes cannot share. Run the embedded server with one worker."
        )
    try:
        check_available(settings.cpu_list)
    except ValueError as exc:
        parser.error(f"--cpus (AISLE_CPUS): {exc}")
    return settings, args.port_file


def announce(settings: ServerSettings, port: int, port_file: Path | None) -> None:
    """Tell tools (the port file) and people (stdout) where the server listens."""
    if port_file is not None:
        port_file.write_text(f"{port}\n")
    print(f"Aisle serving on {settings.host}:{port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    settings, port_file = parse_args(argv)
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    if settings.workers > 1:  # each worker pins itself (`server.workers.run_worker`)
        sys.exit(Supervisor(settings, lambda port: announce(settings, port, port_file)).run())
    cpus = settings.cpu_list  # parsed once (checked by parse_args)
    if cpus:  # before the metrics and dashboard threads start: they inherit it
        pin_process(cpus)
        logging.getLogger("server").info("pinned to CPU %s", settings.cpus)
    metrics = ServerMetrics() if settings.metrics_port or settings.dashboard_port else None
    if metrics is not None and settings.metrics_port:
        serve_metrics(LiveCollector(metrics), settings.metrics_host, settings.metrics_port)
    if metrics is not None and settings.dashboard_port:
        live = metrics
        sampler = Sampler(lambda: [live.snapshot()], settings.dashboard_worker_metrics)
        Dashboard(sampler, settings.dashboard_host, settings.dashboard_port).start()
    try:
        uvloop.run(serve(settings, metrics, lambda port: announce(settings, port, port_file)))
    except ConfigError as exc:  # settings that cannot work: say which, without a traceback
        sys.exit(f"python -m server: {exc}")
    except EncryptionNotConfigured as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
