"""Where accepted writes go: the interface between the services and the event transport."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2


class Ingest(ABC):
    """Makes validated writes durable and (eventually) visible to recommendations.

    Embedded: journal then fold in process, visible on return. Production: produced to Kafka and
    acknowledged by the broker, visible once a feature worker folds them (milliseconds).
    """

    @abstractmethod
    async def events(self, events: Sequence[events_pb2.Event]) -> int:
        """Record validated, time-stamped events; returns how many were duplicates (0 when unknown)."""

    @abstractmethod
    async def upsert_items(self, items: Sequence[catalog_pb2.Item]) -> None: ...

    @abstractmethod
    async def delete_items(self, item_ids: Sequence[str]) -> int:
        """Returns how many of the items existed."""

    @abstractmethod
    async def upsert_user(self, user: users_pb2.User) -> None: ...

    async def close(self) -> None:
        """Flush and release what the transport holds."""
