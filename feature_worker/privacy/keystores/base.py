"""The key store interface: wrapped data keys by customer. Destroying one is crypto-shredding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping


class KeyStore(ABC):
    """Holds each customer's data key, wrapped by the master key (`sealing.MasterKey`); never a clear key."""

    @abstractmethod
    async def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        """The wrapped key of each customer that has one (the others are absent)."""

    @abstractmethod
    async def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        """Store each new wrapped key unless its customer has one already; returns the key each one has now.

        Two writers creating a key for one customer at once end up using the same one (the first stored).
        """

    @abstractmethod
    async def delete_user(self, user_id: str) -> bool:
        """Destroy the customer's key, durably; True when there was one. What it sealed is unreadable from now."""

    async def close(self) -> None:
        """Release what the store holds."""
