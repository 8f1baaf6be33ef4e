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

    #: How `delete_user` appears in an erasure receipt: (store, action, detail).
    erasure_step: tuple[str, str, str] = ("transport", "marked", "")
    #: Where `held_events` finds a customer's events (named in exports).
    events_held_in: str = ""

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

    @abstractmethod
    async def delete_user(self, user_id: str) -> bool:
        """Record a customer's erasure in the transport (journal record, users-topic tombstone) so that no
        replay of it brings them back; True when something was recorded."""

    @abstractmethod
    async def held_events(self, user_id: str) -> list[events_pb2.Event]:
        """The customer's events that the transport still holds readably, oldest first (for an export)."""

    async def close(self) -> None:
        """Flush and release what the transport holds."""
