"""Gateway settings: AISLE_GATEWAY_* variables, an optional env file and the command line, read once."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Everything `python -m server.gateway` can be told. Environment: AISLE_GATEWAY_PORT, …"""

    model_config = SettingsConfigDict(
        env_prefix="AISLE_GATEWAY_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: The gRPC server's host:port (plaintext; run both on loopback or a private network, TLS in front).
    backend: str = "127.0.0.1:50051"
    #: Browser origins allowed to call the API (CORS), e.g. ["https://shop.example"]; empty: none.
    cors_origins: list[str] = []
    #: Deadline of each gRPC call, seconds (the gRPC server's own limits still apply).
    timeout_s: float = Field(10.0, gt=0)
    #: Largest request body accepted, bytes (the gRPC server's default limit).
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
