"""`python -m feature_worker [--env-file FILE]`: fold the event topic into Redis until SIGTERM/SIGINT.

Reads `AISLE_KAFKA_BOOTSTRAP` and `AISLE_REDIS_URL` (both required) and the other `AISLE_*` settings
(`feature_worker.config.Settings`) once; creates the topics if they are missing; loads the catalog and
the user directory from their topics; then consumes as a member of `AISLE_GROUP_ID`. Run more of them
to share the partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

import uvloop

from feature_worker.catalog import Catalog
from feature_worker.config import Settings
from feature_worker.consumer import FeatureWorker
from feature_worker.metrics import WorkerMetrics
from feature_worker.stores.redis import RedisFeatureStore
from feature_worker.tables import TableFollower
from feature_worker.topics import create_topics
from feature_worker.users import UserDirectory

log = logging.getLogger("feature_worker")


async def run(settings: Settings, ready_file: Path | None = None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    topics = settings.topics
    await create_topics(settings.kafka_bootstrap, topics.specs(), replication_factor=settings.replication_factor)
    catalog, users = Catalog(), UserDirectory()
    tables = TableFollower(settings.kafka_bootstrap, topics, catalog, users)
    await tables.start()
    store = RedisFeatureStore.from_url(settings.redis_url.get_secret_value(), policy=settings.key_policy)
    metrics = WorkerMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    worker = FeatureWorker(settings, store, tables, catalog, metrics, ready_file=ready_file)
    gc.freeze()  # the catalog and the modules live as long as the process: full collections skip them
    try:
        await worker.run(stopping)
    finally:
        await tables.stop()
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m feature_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="read AISLE_* settings from this file too (default .env)")
    parser.add_argument("--ready-file", type=Path, help="written once the worker has its partitions (for tools)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(_env_file=args.env_file) if args.env_file else Settings()  # type: ignore[call-arg]
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.kafka_mode:
        sys.exit("python -m feature_worker needs AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL")
    uvloop.run(run(settings, args.ready_file))


if __name__ == "__main__":
    main()
