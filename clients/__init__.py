"""Python client library for Aisle: `AisleClient` (blocking) and `AsyncAisleClient` (asyncio)."""

from clients.client import AisleClient, AsyncAisleClient, ClientOptions

__all__ = ["AisleClient", "AsyncAisleClient", "ClientOptions"]
