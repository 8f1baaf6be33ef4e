"""Settings of the Kafka + Redis deployment, shared by `python -m feature_worker` and `python -m server`.

Read once at start-up from `AISLE_*` environment variables and an optional env file (`--env-file`,
default `.env` when it exists), then passed down; nothing reads the environment anywhere else. The
server's settings (`server.config.ServerSettings`) extend these, so one env file serves every process:
each process ignores the keys that only the other one reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_worker.decay import DAY_MS
from feature_worker.fold import FoldConfig
from feature_worker.keys import KeyPolicy
from feature_worker.topics import Topics


class Settings(BaseSettings):
    """Where Kafka and Redis are, and how the worker uses them. Environment: AISLE_KAFKA_BOOTSTRAP, …"""

    model_config = SettingsConfigDict(env_prefix="AISLE_", env_file=".env", extra="ignore", frozen=True)

    #: `host:port[,host:port…]` of the Kafka brokers. With `redis_url`, selects the Kafka + Redis mode.
    kafka_bootstrap: str = ""
    #: `redis://[:password@]host:port/db` of the feature store.
    redis_url: SecretStr = SecretStr("")
    #: Topics are `<prefix>.events`, `.items`, `.users`, `.dlq` (`feature_worker.topics`).
    topic_prefix: str = "aisle"
    event_partitions: int = Field(4, ge=1)
    #: Replication factor of the topics created at start-up (1 on a single broker, 3 in production).
    replication_factor: int = Field(1, ge=1)
    #: The feature workers' consumer group: run more workers with the same group to scale out.
    group_id: str = "aisle-feature-worker"
    #: Most events folded and committed together. At most `FoldConfig.applied_ids_cap`: a batch
    #: redelivered after a crash is then recognised whole, however many of its events one user sent.
    batch_max: int = Field(2000, ge=1, le=FoldConfig().applied_ids_cap)
    #: How long the broker may hold a fetch to fill it: the floor of the freshness latency at low rates.
    fetch_wait_ms: int = Field(5, ge=0)
    #: Messages larger than this are dead-lettered without being parsed.
    max_event_bytes: int = Field(64 * 1024, ge=256)
    #: Prometheus metrics on http://0.0.0.0:<port>/metrics (0: none).
    metrics_port: int = Field(0, ge=0, le=65535)
    #: Seconds between progress lines in the log (lag, rates); 0 for none.
    log_every_s: float = Field(10.0, ge=0)
    user_ttl_days: float = Field(90.0, gt=0)
    applied_ttl_days: float = Field(1.0, gt=0)
    covis_ttl_days: float = Field(30.0, gt=0)
    log_level: str = "INFO"
    #: Root of the batch store: Delta Lake tables `events`, `items`, `users` (`feature_worker.sink`).
    #: Empty: no batch store (the sink refuses to start; the embedded server writes none).
    lake_dir: str = ""
    #: The batch sink's consumer group, separate from the feature workers' so each reads every event.
    sink_group_id: str = "aisle-batch-sink"
    #: The sink appends when this many records are buffered, or after `sink_flush_s`, whichever comes first.
    sink_batch_max: int = Field(50_000, ge=1)
    sink_flush_s: float = Field(10.0, gt=0)
    #: Model bundles written by `python -m trainer train` (`server.retrieval.bundles`): the server serves the
    #: promoted one and hot-swaps when another is promoted. Empty: no learned model (real-time sources only).
    bundles_dir: str = ""
    #: Seconds between checks of which bundle is promoted.
    bundle_poll_s: float = Field(2.0, gt=0)
    #: Customers' data at rest (journal, Redis features, events on Kafka) sealed with per-customer keys
    #: (`feature_worker.privacy`). "on" (the default) needs `master_key_file` and refuses to start without
    #: it; "off" stores data in clear and says so in the log.
    encryption: Literal["on", "off"] = "on"
    #: The master key (base64 of 32 bytes) that wraps every customer's data key: `make master-key`.
    master_key_file: Path | None = None
    #: Unwrapped data keys cached per process (LRU).
    key_cache_size: int = Field(100_000, ge=1)

    @property
    def kafka_mode(self) -> bool:
        """Both Kafka and Redis are configured: run against them instead of in-process."""
        return bool(self.kafka_bootstrap and self.redis_url.get_secret_value())

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.event_partitions)

    @property
    def key_policy(self) -> KeyPolicy:
        return KeyPolicy(
            user_ttl_ms=int(self.user_ttl_days * DAY_MS),
            applied_ttl_ms=int(self.applied_ttl_days * DAY_MS),
            covis_ttl_ms=int(self.covis_ttl_days * DAY_MS),
        )
