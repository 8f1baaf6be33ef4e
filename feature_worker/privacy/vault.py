"""The customers' data keys as the processes use them: fetched from a key store, unwrapped once, cached.

Cache: a bounded LRU of unwrapped keys by customer, each entry remembering the wrapped form it came from.
Readers that fetch the wrapped key with the data (the Recommend read script returns both) call `cipher`,
which reuses the cached key only when the wrapped forms match: a key destroyed and created anew elsewhere
(an erasure, then the customer coming back) is never confused with the old one, and no process needs to be
told of an erasure for its cache to stay right. A cache hit costs a dict lookup; a miss one AES-GCM unwrap
(a few microseconds).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from feature_worker.privacy.keystores.base import KeyStore
from feature_worker.privacy.sealing import MasterKey, MasterKeyError

#: Unwrapped keys kept per process by default (about 200 bytes each).
DEFAULT_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class DataKey:
    """One customer's data key: as stored (`wrapped`) and ready to use (`aead`)."""

    wrapped: bytes
    aead: AESGCM


class Vault:
    """Data keys of every customer: created on first need, cached, destroyed on erasure. Thread-safe."""

    def __init__(self, master: MasterKey, store: KeyStore, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.master = master
        self.store = store
        self.cache_size = cache_size
        self._cache: OrderedDict[str, DataKey] = OrderedDict()
        self._lock = threading.Lock()

    def cipher(self, user_id: str, wrapped: bytes) -> AESGCM:
        """The cipher of `user_id`'s key as stored now (`wrapped`, read with the data it seals)."""
        with self._lock:
            key = self._cache.get(user_id)
            if key is not None and key.wrapped == wrapped:
                self._cache.move_to_end(user_id)
                return key.aead
        aead = self.master.unwrap(user_id, wrapped)
        self._remember(user_id, DataKey(wrapped, aead))
        return aead

    def cached(self, user_id: str) -> DataKey | None:
        """The key last fetched for `user_id` by this process, if still cached."""
        with self._lock:
            return self._cache.get(user_id)

    async def keys(self, user_ids: Collection[str], create: bool = False) -> dict[str, DataKey]:
        """Each customer's current key, read from the store (authoritative); with `create`, a new key for
        each customer without one (stored before this returns). Without `create`, customers without a key
        (never seen, or erased) are absent."""
        found = await self.store.get_many(user_ids)
        if create:
            missing = [u for u in user_ids if u not in found]
            if missing:
                fresh = {u: self.master.new_data_key(u) for u in missing}
                stored = await self.store.create_many({u: w for u, (w, _) in fresh.items()})
                for user_id, wrapped in stored.items():
                    if wrapped == fresh[user_id][0]:  # ours won; another writer's otherwise (unwrapped below)
                        self._remember(user_id, DataKey(wrapped, fresh[user_id][1]))
                found.update(stored)
        return {u: DataKey(w, self.cipher(u, w)) for u, w in found.items()}

    async def delete_user(self, user_id: str) -> bool:
        """Destroy the customer's key in the store (crypto-shredding) and forget it here."""
        destroyed = await self.store.delete_user(user_id)
        self.forget(user_id)
        return destroyed

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._cache.pop(user_id, None)

    def _remember(self, user_id: str, key: DataKey) -> None:
        with self._lock:
            self._cache[user_id] = key
            self._cache.move_to_end(user_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    async def close(self) -> None:
        await self.store.close()


class EncryptionNotConfigured(MasterKeyError):
    """Encryption is on (the default) but no master key file is configured."""


def load_master_key(encryption: str, master_key_file: Path | None) -> MasterKey | None:
    """The master key to use, None when encryption is explicitly off; raises when it is on without a key.

    Aisle refuses to start rather than write customers' data in clear by accident: production runs
    set `AISLE_MASTER_KEY_FILE`; `AISLE_ENCRYPTION=off` is the explicit, logged way to run without it.
    """
    if encryption == "off":
        return None
    if master_key_file is None:
        raise EncryptionNotConfigured(
            "AISLE_MASTER_KEY_FILE is not set: customers' data is encrypted at rest with keys wrapped by a "
            "master key. Write one with `make master-key` (or `python -m feature_worker.privacy.master_key FILE`) "
            "and point AISLE_MASTER_KEY_FILE at it, or set AISLE_ENCRYPTION=off to store data in clear."
        )
    return MasterKey.load(master_key_file)
