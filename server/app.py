"""Building and running the gRPC server from settings."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from feature_worker.catalog import Catalog
from feature_worker.privacy.events import EventOpener
from feature_worker.privacy.keystores.file import FileKeyStore
from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.sealing import MasterKey
from feature_worker.privacy.vault import Vault, load_master_key
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.stores.redis_cluster import redis_store_from_url
from feature_worker.tables import TableFollower
from feature_worker.topics import TopicSpec, create_topics
from feature_worker.users import UserDirectory
from protos.aisle.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    experiments_pb2,
    experiments_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
    segments_pb2,
    segments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from server.collector import GrowthFreezer, log_long_pauses
from server.config import ServerSettings
from server.embedded.ingest import EmbeddedIngest, JournalLake
from server.embedded.journal import Journal
from server.embedded.records import JournalReader
from server.engine import Engine
from server.experiments.exposures import (
    ExposureLog,
    ExposureSink,
    JournalExposureSink,
    KafkaExposureSink,
    LakeExposureSink,
)
from server.experiments.metrics import snapshot as serving_snapshot
from server.experiments.serving import Experiments
from server.experiments.store import ExperimentStore
from server.interceptors.auth import AuthInterceptor, build_auth
from server.interceptors.errors import ErrorInterceptor
from server.interceptors.metrics import MetricsInterceptor
from server.kafka.ingest import KafkaIngest
from server.metrics import ServerMetrics
from server.privacy.audit import AuditLog
from server.privacy.rights import CustomerRights
from server.reflection import enable_reflection
from server.retrieval.registry import ModelRegistry
from server.retrieval.two_tower import load as load_bundle
from server.services.catalog import CatalogService
from server.services.events import EventService
from server.services.experiments import ExperimentService
from server.services.recommendations import RecommendationService
from server.services.segments import SegmentService
from server.services.users import UserService
from server.tls import bind

log = logging.getLogger(__name__)

#: The collector's thresholds while serving (see `serve`).
GC_THRESHOLDS = (700, 10, 100)

SERVICE_NAMES = (
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    recommendations_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
    experiments_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name,
    segments_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name,
)
#: gRPC refuses larger messages outright (RESOURCE_EXHAUSTED); between max_request_bytes and this,
#: Aisle answers INVALID_ARGUMENT naming the limit.
TRANSPORT_LIMIT = 64 * 1024 * 1024


@dataclass
class Running:
    server: grpc.aio.Server
    engine: Engine
    port: int
    auth: AuthInterceptor | None = None


async def build_models(settings: ServerSettings) -> ModelRegistry | None:
    """The bundle registry when ``bundles_dir`` is set, already serving the promoted bundle if it loads.

    Without a promoted bundle (or with one that fails to load) the server starts on the real-time sources and
    picks up the next promotion.
    """
    if not settings.bundles_dir:
        return None
    models = ModelRegistry(
        Path(settings.bundles_dir),
        settings.bundle_poll_s,
        loader=partial(load_bundle, cache_capacity=settings.proposal_cache_users),
    )
    await models.check()
    return models


async def build_engine(settings: ServerSettings) -> Engine:
    """Kafka + Redis when both are configured, else embedded; with erasure and export (`engine.rights`).

    Encryption at rest is on unless `AISLE_ENCRYPTION=off`; on without `AISLE_MASTER_KEY_FILE` refuses to
    start (`EncryptionNotConfigured`), since writing customers' data in clear must be a decision.
    """
    master = load_master_key(settings.encryption, settings.master_key_file)
    if master is None:
        log.warning(
            "AISLE_ENCRYPTION=off: customers' data is stored in clear (journal, Redis, event topic); "
            "an erasure cannot reach backups or replays of it"
        )
    if settings.kafka_mode:
        engine, vault = await build_kafka_engine(settings, master)
    else:
        engine, vault = await build_embedded_engine(settings, master)
    engine.rights = CustomerRights(engine, vault, AuditLog(settings.audit_log_path), settings.lake_dir)
    engine.experiments = await build_experiments(settings, engine)
    return engine


async def build_experiments(settings: ServerSettings, engine: Engine) -> Experiments:
    """The experiments file's store (read once now) and the exposure log with its sinks: the Kafka topic
    `<prefix>.exposures` (Kafka mode) or `<data_dir>/exposures.bin` (embedded), then the lake when one is set."""
    store = ExperimentStore(settings.experiments_path, engine.models, settings.experiments_poll_s)
    await store.reload()
    if not settings.exposures:
        return Experiments(store)
    sinks: list[ExposureSink] = []
    if isinstance(engine.ingest, KafkaIngest):
        topic = f"{settings.topic_prefix}.exposures"
        await create_topics(
            settings.kafka_bootstrap,
            [TopicSpec(topic, settings.event_partitions)],
            replication_factor=settings.replication_factor,
        )
        sinks.append(KafkaExposureSink(engine.ingest.producer, topic))
    else:
        sinks.append(JournalExposureSink(settings.data_dir / "exposures.bin", fsync=settings.journal_fsync))
    if settings.lake_dir:
        sinks.append(await asyncio.to_thread(LakeExposureSink, settings.lake_dir))
    return Experiments(store, ExposureLog(sinks, capacity=settings.exposure_queue))


async def build_kafka_engine(
    settings: ServerSettings, master: MasterKey | None = None
) -> tuple[Engine, Vault | None]:
    """Writes produced to Kafka, features read from Redis, catalog and users followed from their topics.

    Creates the topics if they are missing and returns once the catalog and the users are loaded.
    """
    topics = settings.topics
    await create_topics(
        settings.kafka_bootstrap, topics.specs(), replication_factor=settings.replication_factor
    )
    store = redis_store_from_url(settings.redis_url.get_secret_value(), policy=settings.key_policy)
    vault = None
    if master is not None:
        vault = store.vault = Vault(master, RedisKeyStore(store.client), settings.key_cache_size)
    catalog, users = Catalog(), UserDirectory()
    opener = EventOpener(vault) if vault is not None else None
    tables = TableFollower(settings.kafka_bootstrap, topics, catalog, users, opener)
    await tables.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    ingest = KafkaIngest(producer, topics, tables, store, catalog, vault, settings.kafka_bootstrap)
    models = await build_models(settings)
    engine = Engine(catalog, users, store, ingest, lists_refresh_s=settings.lists_refresh_s, models=models)
    await engine.refresh_lists()
    return engine, vault


async def build_embedded_engine(
    settings: ServerSettings, master: MasterKey | None = None
) -> tuple[Engine, Vault | None]:
    """The embedded engine: journal under the data directory, replayed into in-process state; with a master
    key, customers' data keys in `keys.txt` beside the journal."""
    catalog, users, store = Catalog(), UserDirectory(), MemoryFeatureStore()
    journal = Journal(settings.data_dir / "journal.bin", fsync=settings.journal_fsync)
    keys = FileKeyStore(settings.data_dir / "keys.txt") if master is not None else None
    vault = Vault(master, keys, settings.key_cache_size) if master is not None and keys is not None else None
    ingest = EmbeddedIngest(
        journal,
        catalog,
        users,
        store,
        vault,
        keys,
        snapshot_path=settings.data_dir / "snapshot.bin",
        snapshot_every_bytes=settings.snapshot_every_mb << 20,
    )
    await ingest.recover()
    if settings.lake_dir:  # the batch store, appended from the journal off the request path
        ingest.lake = await asyncio.to_thread(
            JournalLake.start,
            journal.path,
            settings.lake_dir,
            settings.sink_batch_max,
            settings.sink_flush_s,
            JournalReader(vault, keys.file if keys is not None else None),
            users,
        )
    models = await build_models(settings)
    if models is not None:
        # The server folds every event itself here, so it computes each user's learned proposals when the fold
        # writes them, off the request path (`server.retrieval.warmer`).
        ingest.warmer = await models.warm_from(lambda: store.features.users, users.personalization_allowed)
    engine = Engine(catalog, users, store, ingest, lists_refresh_s=settings.lists_refresh_s, models=models)
    await engine.refresh_lists()
    return engine, vault


async def start(
    settings: ServerSettings, engine: Engine | None = None, metrics: ServerMetrics | None = None
) -> Running:
    """Build the engine (unless given), bind, start serving; returns the bound port (port 0 picks one).

    With `metrics`, every unary call and every Recommend's stages are recorded there.
    """
    auth = await build_auth(settings)  # before the engine: a bad key source fails fast
    engine = engine or await build_engine(settings)
    # Auth first: a call is authenticated before its request is parsed or validated.
    interceptors: list[grpc.aio.ServerInterceptor] = [
        *([auth] if auth is not None else []),
        ErrorInterceptor(settings.max_request_bytes),
    ]
    if metrics is not None:
        interceptors.insert(0, MetricsInterceptor(metrics))  # outermost: it sees the status errors map to
        engine.stage_observer = metrics.observe_stages
        metrics.serving = partial(serving_snapshot, engine)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", TRANSPORT_LIMIT),
            ("grpc.so_reuseport", 1),
        ],
    )
    events_pb2_grpc.add_EventServiceServicer_to_server(EventService(engine), server)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogService(engine), server)
    users_pb2_grpc.add_UserServiceServicer_to_server(UserService(engine), server)
    recommendations_pb2_grpc.add_RecommendationServiceServicer_to_server(
        RecommendationService(engine), server
    )
    if engine.experiments is not None:
        experiments_pb2_grpc.add_ExperimentServiceServicer_to_server(
            ExperimentService(engine.experiments.store), server
        )
    segments_pb2_grpc.add_SegmentServiceServicer_to_server(SegmentService(engine), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    port, transport = bind(server, settings)
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    await server.start()
    engine.start()
    if auth is not None:
        auth.start()
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    mode = (
        f"Kafka {settings.kafka_bootstrap} + Redis, topics {settings.topic_prefix}.*"
        if settings.kafka_mode
        else f"embedded, data in {settings.data_dir}"
    )
    mode += ", customer data encrypted at rest" if settings.encryption == "on" else ", ENCRYPTION OFF"
    model = engine.models.version if engine.models is not None else None
    if settings.bundles_dir:
        mode += f", bundles in {settings.bundles_dir} (serving {model or 'none yet'})"
    if auth is None:
        log.warning(
            "authentication is OFF: every caller may call every method (set AISLE_AUTH_JWKS_FILE or "
            "AISLE_AUTH_JWKS_URL, and AISLE_AUTH_REQUIRED=true to refuse to start without)"
        )
    security = f"{transport}, auth: {auth.describe() if auth is not None else 'OFF (open)'}"
    log.info("Aisle serving on %s:%d (%s; %s)", settings.host, port, mode, security)
    return Running(server, engine, port, auth)


async def stop(running: Running, grace_s: float = 5.0) -> None:
    """Finish in-flight calls, then close the engine (flushes the journal)."""
    await running.server.stop(grace_s)
    if running.auth is not None:
        await running.auth.close()
    await running.engine.close()


async def serve(
    settings: ServerSettings,
    metrics: ServerMetrics | None,
    on_ready: Callable[[int], None],
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Start, call `on_ready(port)`, serve until one of `signals` arrives, then stop gracefully."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:  # before start-up, so a signal during a long start stops right after it
        loop.add_signal_handler(sig, stopping.set)
    running = await start(settings, metrics=metrics)
    # What start-up built (catalog, users, replayed state, modules) lives as long as the process: keep the
    # collector from scanning it again and again (`server.collector`); and again after the warmer's bulk growth.
    gc.freeze()
    log_long_pauses()
    models = running.engine.models
    if models is not None and models.warmer is not None:
        models.warmer.on_computed = GrowthFreezer().grown
    # The young generations keep CPython's thresholds: a young collection walks what survived since the last one,
    # and its cost per object grows once that no longer fits the caches. Measured on the 100k shop while the
    # per-item memos fill (`BENCHMARKS.md`): young collections every 20,000 allocations paused for 4.4 ms on
    # average (10 ms at most), every 700 for 0.06 ms (0.25 ms), and the collector's total time halved. The
    # oldest generation waits for 100 older collections (and CPython's own 25 % growth rule): start-up and
    # growth are frozen, so a full collection only walks what was built since.
    gc.set_threshold(*GC_THRESHOLDS)
    # Background work in threads (the popular/trending rebuild) hands the GIL back to the event loop
    # every millisecond instead of every five, so requests wait less behind it.
    sys.setswitchinterval(0.001)
    on_ready(running.port)
    await stopping.wait()
    log.info("shutting down")
    await stop(running)
