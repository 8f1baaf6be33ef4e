"""Events (and customer records) on Kafka sealed with their customer's data key, and opening them again in the
consumers.

A sealed event record keeps the user id as its key (it decides the partition) and carries
`sealing.seal(key, user_id, EVENT, Event bytes)` as its value. Consumers (the feature worker, the batch sink,
an export) fetch the keys of a batch's users first (`EventOpener.prefetch`, one key-store call) and then open
each record; a record whose customer has no key any more (erased) cannot be opened and is skipped, counted as
shredded: this is why replaying the topic, from any offset and in any consumer group, never brings an erased
customer back. Clear records (producers without the master key) are still read as before. Customer records on
the users topic are sealed the same way (field `USER`), so the attributes of an erased customer cannot be read
from the topic's backlog either, before compaction drops them behind the erasure's tombstone.

One opener per consuming task: `prefetch` replaces the keys it holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import ConsumerRecord

from feature_worker.privacy.sealing import EVENT, USER, Unreadable, is_sealed, open_sealed, seal
from feature_worker.privacy.vault import DataKey, Vault


def seal_event(key: DataKey, user_id: str, event_bytes: bytes) -> bytes:
    return seal(key.aead, user_id, EVENT, event_bytes)


def seal_user(key: DataKey, user_id: str, user_bytes: bytes) -> bytes:
    return seal(key.aead, user_id, USER, user_bytes)


class EventOpener:
    """Opens sealed event values with keys fetched per batch; counts those it could not open."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._keys: dict[str, DataKey] = {}
        #: Sealed records skipped because their customer's key is gone (erased) or does not fit.
        self.shredded = 0

    async def prefetch(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        """Fetch the current keys of the users of the sealed records among `records` (one key-store call)."""
        users = {(r.key or b"").decode("utf-8", "replace") for r in records if r.value and is_sealed(r.value)}
        self._keys = await self.vault.keys(users) if users else {}

    def __call__(self, user_id: str, value: bytes) -> bytes | None:
        """The event bytes of a sealed value, None when its key is gone (the record is skipped)."""
        return self.open(user_id, value, EVENT)

    def open(self, user_id: str, value: bytes, field: bytes) -> bytes | None:
        """The plaintext of a sealed `field` value (EVENT, USER), None when its key is gone."""
        key = self._keys.get(user_id)
        if key is None:
            self.shredded += 1
            return None
        try:
            return open_sealed(key.aead, user_id, field, value)
        except Unreadable:
            self.shredded += 1  # sealed with a key destroyed since: the customer was erased, then came back
            return None
