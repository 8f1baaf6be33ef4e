"""Server settings: read once at start-up from AISLE_* environment variables, an optional .env file
and the command line (which wins), then passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Everything `python -m server` can be told. Environment: AISLE_HOST, AISLE_PORT, …"""

    model_config = SettingsConfigDict(env_prefix="AISLE_", env_file=".env", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    data_dir: Path = Path(".data")
    #: fsync the journal on every write: survives machine crashes, costs latency. Flush-only survives
    #: process crashes.
    journal_fsync: bool = False
    #: How often popular/trending lists are rebuilt; 0 rebuilds on every request that finds them stale
    #: (deterministic, for tests and evaluation).
    lists_refresh_s: float = Field(1.0, ge=0)
    #: Largest request accepted, in bytes; larger ones are INVALID_ARGUMENT.
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    log_level: str = "INFO"
