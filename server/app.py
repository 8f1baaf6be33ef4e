"""Building and running the gRPC server from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from feature_worker.catalog import Catalog
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from protos.aisle.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from server.config import ServerSettings
from server.embedded.ingest import EmbeddedIngest
from server.embedded.journal import Journal
from server.engine import Engine
from server.interceptors.errors import ErrorInterceptor
from server.reflection import enable_reflection
from server.services.catalog import CatalogService
from server.services.events import EventService
from server.services.recommendations import RecommendationService
from server.services.users import UserService

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    recommendations_pb2.DESCRIPTOR.services_by_name["RecommendationService"].full_name,
)
#: gRPC refuses larger messages outright (RESOURCE_EXHAUSTED); between max_request_bytes and this,
#: Aisle answers INVALID_ARGUMENT naming the limit.
TRANSPORT_LIMIT = 64 * 1024 * 1024


@dataclass
class Running:
    server: grpc.aio.Server
    engine: Engine
    port: int


async def build_engine(settings: ServerSettings) -> Engine:
    """The embedded engine: journal under the data directory, replayed into in-process state."""
    catalog, users, store = Catalog(), UserDirectory(), MemoryFeatureStore()
    journal = Journal(settings.data_dir / "journal.bin", fsync=settings.journal_fsync)
    ingest = EmbeddedIngest(journal, catalog, users, store)
    await ingest.recover()
    engine = Engine(catalog, users, store, ingest, lists_refresh_s=settings.lists_refresh_s)
    await engine.refresh_lists()
    return engine


async def start(settings: ServerSettings, engine: Engine | None = None) -> Running:
    """Build the engine (unless given), bind, start serving; returns the bound port (port 0 picks one)."""
    engine = engine or await build_engine(settings)
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(settings.max_request_bytes)],
        options=[
            ("grpc.max_receive_message_length", TRANSPORT_LIMIT),
            ("grpc.so_reuseport", 1),
        ],
    )
    events_pb2_grpc.add_EventServiceServicer_to_server(EventService(engine), server)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogService(engine), server)
    users_pb2_grpc.add_UserServiceServicer_to_server(UserService(engine), server)
    recommendations_pb2_grpc.add_RecommendationServiceServicer_to_server(RecommendationService(engine), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.host}:{settings.port}")
    await server.start()
    engine.start()
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("Aisle serving on %s:%d (embedded, data in %s)", settings.host, port, settings.data_dir)
    return Running(server, engine, port)


async def stop(running: Running, grace_s: float = 5.0) -> None:
    """Finish in-flight calls, then close the engine (flushes the journal)."""
    await running.server.stop(grace_s)
    await running.engine.close()
