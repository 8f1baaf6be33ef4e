"""Server settings: read once at start-up from AISLE_* environment variables, an optional env file
(`--env-file`, default `.env`) and the command line (which wins), then passed down.

They extend the Kafka + Redis settings that the feature worker reads (`feature_worker.config.Settings`),
so one env file configures both: with `AISLE_KAFKA_BOOTSTRAP` and `AISLE_REDIS_URL` set the server runs
in Kafka + Redis mode, without them embedded. The model bundle settings (`bundles_dir`, `bundle_poll_s`) come
from there too: the trainer and the server read the same directory."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from feature_worker.config import Settings


class ServerSettings(Settings):
    """Everything `python -m server` can be told. Environment: AISLE_HOST, AISLE_PORT, …"""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    #: Embedded mode: where the journal lives.
    data_dir: Path = Path(".data")
    #: fsync the journal on every write: survives machine crashes, costs latency. Flush-only survives
    #: process crashes.
    journal_fsync: bool = False
    #: How often popular/trending lists are rebuilt; 0 rebuilds on every request that finds them stale
    #: (deterministic, for tests and evaluation).
    lists_refresh_s: float = Field(1.0, ge=0)
    #: Largest request accepted, in bytes; larger ones are INVALID_ARGUMENT.
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Prometheus `/metrics` on http://<metrics_host>:<port>/metrics (`server.metrics`); 0: none. The same
    #: variable as the worker's (AISLE_METRICS_PORT): give each process on one host its own.
    metrics_port: int = Field(0, ge=0, le=65535)
    #: Where `/metrics` listens: loopback by default; 0.0.0.0 for a Prometheus on another host.
    metrics_host: str = "127.0.0.1"
    #: Server processes sharing the port (SO_REUSEPORT), supervised by a parent process (`server.workers`).
    #: More than 1 needs the Kafka + Redis mode: the embedded journal and state live in one process.
    workers: int = Field(1, ge=1, le=256)
