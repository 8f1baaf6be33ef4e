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
from server.affinity import parse_cpu_list


class ConfigError(ValueError):
    """Settings that cannot work together (or files they name that cannot be used): a start-up error."""


class ServerSettings(Settings):
    """Everything `python -m server` can be told. Environment: AISLE_HOST, AISLE_PORT, …"""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    #: Embedded mode: where the journal lives.
    data_dir: Path = Path(".data")
    #: fsync the journal on every write: survives machine crashes, costs latency. Flush-only survives
    #: process crashes.
    journal_fsync: bool = False
    #: Embedded mode: snapshot the in-process state each time the journal grows by this many MiB (and on a
    #: clean stop), so that a start replays at most that much journal after loading it; 0: never.
    snapshot_every_mb: int = 64
    #: How often popular/trending lists are rebuilt; 0 rebuilds on every request that finds them stale
    #: (deterministic, for tests and evaluation).
    lists_refresh_s: float = Field(1.0, ge=0)
    #: User states whose learned proposals (the tower's search and the transitions' list) each served bundle
    #: remembers, about 2 KiB each (`server.retrieval.proposals`); 0 computes them on every request.
    proposal_cache_users: int = Field(100_000, ge=0)
    #: Largest request accepted, in bytes; larger ones are INVALID_ARGUMENT.
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)

    # -- authentication (server.auth): with a key source every aisle.v1 method needs a bearer JWT ----------
    #: A JWKS file of the issuer's public keys, re-read when it changes (checked every `auth_jwks_refresh_s`
    #: and at once on an unknown `kid`).
    auth_jwks_file: Path | None = None
    #: Or the issuer's JWKS URL (https only): fetched off the event loop, refreshed every
    #: `auth_jwks_refresh_s` and on an unknown `kid` at most every `auth_jwks_min_refresh_s`; the last good
    #: key set is kept while a refresh fails.
    auth_jwks_url: str = ""
    #: Seconds between checks of the key source (file: a stat; URL: a fetch).
    auth_jwks_refresh_s: float = Field(0.0, ge=0, description="0: 1 s for a file, 300 s for a URL")
    auth_jwks_min_refresh_s: float = Field(30.0, ge=0)
    auth_jwks_timeout_s: float = Field(5.0, gt=0)
    #: `iss` must equal this exactly; `aud` must contain `auth_audience`. Both required with a key source.
    auth_issuer: str = ""
    auth_audience: str = ""
    #: Refuse to start without a key source (production), instead of serving open.
    auth_required: bool = False
    #: Accepted `typ` headers: RFC 9068 access tokens; add "JWT" for issuers that do not set `at+jwt`.
    auth_token_types: list[str] = Field(default_factory=lambda: ["at+jwt"])
    #: Signature algorithms accepted; only asymmetric ones may be named (`none` and HS* refuse to start).
    auth_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    #: Clock skew tolerated on `exp`, `nbf` and `iat`, seconds.
    auth_leeway_s: float = Field(30.0, ge=0, le=300)
    #: Verified tokens remembered (until their expiry) so that a repeated token costs a dict lookup.
    auth_cache_size: int = Field(10_000, ge=0)
    #: Calls per second per partner (`client_id`, else `sub`), 0 for no limit; `auth_rate_limit_burst`
    #: calls may come at once (0: one second's worth). `auth_rate_limits` ({"partner": rps}, JSON in the
    #: environment) overrides the rate for named partners.
    auth_rate_limit_rps: float = Field(0.0, ge=0)
    auth_rate_limit_burst: float = Field(0.0, ge=0)
    auth_rate_limits: dict[str, float] = Field(default_factory=dict)

    # -- TLS (server.tls): with a certificate the server serves TLS only, no plaintext port ------------------
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: PEM CA bundle: when set, every client must present a certificate it signed (mutual TLS).
    tls_client_ca_file: Path | None = None
    #: The audit log of privacy calls (erasure, export); default `<data_dir>/audit.log`.
    audit_log_file: Path | None = None

    @property
    def audit_log_path(self) -> Path:
        return self.audit_log_file or self.data_dir / "audit.log"

    #: Prometheus `/metrics` on http://<metrics_host>:<port>/metrics (`server.metrics`); 0: none. The same
    #: variable as the worker's (AISLE_METRICS_PORT): give each process on one host its own.
    metrics_port: int = Field(0, ge=0, le=65535)
    #: Where `/metrics` listens: loopback by default; 0.0.0.0 for a Prometheus on another host.
    metrics_host: str = "127.0.0.1"
    # -- experiments (server.experiments) -----------------------------------------------------------------
    #: The experiments file the server watches and ExperimentService rewrites; default `<data_dir>/experiments.json`.
    experiments_file: Path | None = None
    #: Seconds between checks of the experiments file for changes made by hand; 0: read at start only.
    experiments_poll_s: float = Field(1.0, ge=0)
    #: Exposure logging (one record per answer, off the request path): on, or off (no exposures written).
    exposures: bool = True
    #: Exposures waiting to be written; past this, new ones are dropped and counted, never waited for.
    exposure_queue: int = Field(10_000, ge=1)
    #: The live dashboard (`server.dashboard`) on http://<dashboard_host>:<dashboard_port>/; 0: none.
    dashboard_port: int = Field(0, ge=0, le=65535)
    dashboard_host: str = "127.0.0.1"
    #: Workers' `/metrics` URLs whose consumer lag the dashboard plots (JSON list in the environment).
    dashboard_worker_metrics: list[str] = Field(default_factory=list)

    @property
    def experiments_path(self) -> Path:
        return self.experiments_file or self.data_dir / "experiments.json"

    #: Server processes sharing the port (SO_REUSEPORT), supervised by a parent process (`server.workers`).
    #: More than 1 needs the Kafka + Redis mode: the embedded journal and state live in one process.
    workers: int = Field(1, ge=1, le=256)
    #: The CPUs the server runs on, as a Linux CPU list ("1", "0-3", "0,2"); empty: wherever the scheduler puts
    #: it. Each thread is pinned (`server.affinity`); with `workers` > 1 each worker takes one CPU of the list,
    #: in turn. `python -m server` refuses a malformed list or CPUs it may not use.
    cpus: str = ""

    @property
    def cpu_list(self) -> tuple[int, ...]:
        """`cpus` as numbers, ascending (empty: not pinned); ValueError for a malformed list."""
        return parse_cpu_list(self.cpus) if self.cpus.strip() else ()
