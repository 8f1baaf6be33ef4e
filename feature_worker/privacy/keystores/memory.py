"""Keys in a dict: the fake for unit tests (nothing survives the process)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from feature_worker.privacy.keystores.base import KeyStore


class MemoryKeyStore(KeyStore):
    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    async def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        return {u: self.keys[u] for u in user_ids if u in self.keys}

    async def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        return {u: self.keys.setdefault(u, w) for u, w in wrapped.items()}

    async def delete_user(self, user_id: str) -> bool:
        return self.keys.pop(user_id, None) is not None
