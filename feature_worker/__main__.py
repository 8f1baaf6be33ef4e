"""`python -m feature_worker [sink|lake-optimize] [--env-file FILE]`: the feature worker, or the batch sink.

Without a command: fold the event topic into Redis until SIGTERM/SIGINT. Reads `AISLE_KAFKA_BOOTSTRAP` and
`AISLE_REDIS_URL` (both required) and the other `AISLE_*` settings (`feature_worker.config.Settings`) once;
creates the topics if they are missing; loads the catalog and the user directory from their topics; then
consumes as a member of `AISLE_GROUP_ID`. Run more of them to share the partitions.

`sink`: append every event, item and user change to the Delta tables under `AISLE_LAKE_DIR` as the group
`AISLE_SINK_GROUP_ID` until SIGTERM/SIGINT (`feature_worker.lake.sink`); needs `AISLE_KAFKA_BOOTSTRAP`.
`lake-optimize`: compact, checkpoint and vacuum those tables (`feature_worker.lake.maintenance`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path

import uvloop

from feature_worker.catalog import Catalog
from feature_worker.config import Settings
from feature_worker.consumer import FeatureWorker
from feature_worker.metrics import WorkerMetrics
from feature_worker.privacy.events import EventOpener
from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.vault import EncryptionNotConfigured, Vault, load_master_key
from feature_worker.stores.redis_cluster import redis_store_from_url
from feature_worker.tables import TableFollower
from feature_worker.topics import create_topics
from feature_worker.users import UserDirectory

log = logging.getLogger("feature_worker")


def _stopping_on_signals() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


async def run(settings: Settings, ready_file: Path | None = None) -> None:
    stopping = _stopping_on_signals()
    topics = settings.topics
    await create_topics(
        settings.kafka_bootstrap, topics.specs(), replication_factor=settings.replication_factor
    )
    store = redis_store_from_url(settings.redis_url.get_secret_value(), policy=settings.key_policy)
    opener = tables_opener = None
    master = load_master_key(settings.encryption, settings.master_key_file)
    if master is not None:
        store.vault = Vault(master, RedisKeyStore(store.client), settings.key_cache_size)
        opener, tables_opener = EventOpener(store.vault), EventOpener(store.vault)
    else:
        log.warning("AISLE_ENCRYPTION=off: customers' features are stored in clear")
    await store.recover()  # what a worker killed mid-commit left half-done (Redis Cluster)
    catalog, users = Catalog(), UserDirectory()
    tables = TableFollower(settings.kafka_bootstrap, topics, catalog, users, tables_opener)
    await tables.start()
    metrics = WorkerMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    worker = FeatureWorker(settings, store, tables, catalog, metrics, ready_file=ready_file, opener=opener)
    gc.freeze()  # the catalog and the modules live as long as the process: full collections skip them
    try:
        await worker.run(stopping)
    finally:
        await tables.stop()
        await store.close()


async def run_sink(settings: Settings, ready_file: Path | None = None) -> None:
    """The batch sink (`feature_worker.lake.sink`): topics created if missing, then consume until a signal."""
    from feature_worker.lake.sink import BatchSink
    from feature_worker.lake.writer import Lake

    stopping = _stopping_on_signals()
    opener = tables_opener = None
    client = None
    master = load_master_key(settings.encryption, settings.master_key_file)
    if master is not None:
        if not settings.redis_url.get_secret_value():
            raise EncryptionNotConfigured(
                "the sink opens sealed events with keys kept in Redis: set AISLE_REDIS_URL"
            )
        client = redis_store_from_url(settings.redis_url.get_secret_value()).client
        vault = Vault(master, RedisKeyStore(client), settings.key_cache_size)
        opener, tables_opener = EventOpener(vault), EventOpener(vault)
    await create_topics(
        settings.kafka_bootstrap, settings.topics.specs(), replication_factor=settings.replication_factor
    )
    tables = TableFollower(
        settings.kafka_bootstrap, settings.topics, Catalog(), UserDirectory(), tables_opener
    )
    await tables.start()
    lake = await asyncio.to_thread(Lake, settings.lake_dir)
    try:
        await BatchSink(settings, lake, ready_file=ready_file, opener=opener, tables=tables).run(stopping)
    finally:
        await tables.stop()
        if client is not None:
            await client.aclose(close_connection_pool=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m feature_worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="fold",
        choices=("fold", "sink", "lake-optimize"),
        help="fold (default): the feature worker; sink: the batch sink; lake-optimize: "
        "compact and vacuum the batch store",
    )
    parser.add_argument(
        "--env-file", type=Path, help="read AISLE_* settings from this file too (default .env)"
    )
    parser.add_argument(
        "--ready-file", type=Path, help="written once the worker has its partitions (for tools)"
    )
    parser.add_argument(
        "--retention-hours",
        type=int,
        default=168,
        help="lake-optimize: keep files that versions this recent still read (default 168)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(_env_file=args.env_file) if args.env_file else Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command != "fold" and not settings.lake_dir:
        sys.exit(f"python -m feature_worker {args.command} needs AISLE_LAKE_DIR")
    if args.command == "lake-optimize":
        from feature_worker.lake.maintenance import optimize
        from feature_worker.lake.writer import Lake

        print(json.dumps(optimize(Lake(settings.lake_dir), args.retention_hours), indent=2))
        return
    if args.command == "sink":
        if not settings.kafka_bootstrap:
            sys.exit("python -m feature_worker sink needs AISLE_KAFKA_BOOTSTRAP")
        try:
            uvloop.run(run_sink(settings, args.ready_file))
        except EncryptionNotConfigured as exc:
            sys.exit(str(exc))
        return
    if not settings.kafka_mode:
        sys.exit("python -m feature_worker needs AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL")
    try:
        uvloop.run(run(settings, args.ready_file))
    except EncryptionNotConfigured as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
