"""The Kafka + Redis key store: each customer's wrapped key in `x1{<user>}` (`feature_worker.keys`).

The key shares its hash tag with the customer's features, so on a Redis Cluster the read script of
`RedisFeatureStore` fetches both in one call, and the worker's commit can check in the same script that the
key it sealed with is still the customer's (an erasure between the two leaves nothing behind).
Keys have no TTL: one that expired while the event topic still held the customer's events would shred them
silently; `delete_user` (an erasure) is what removes one. About 170 bytes of Redis memory per customer
(BENCHMARKS.md).
Run Redis with AOF (`appendfsync always`), as for the features: a lost key is lost data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from feature_worker import keys
from feature_worker.privacy.keystores.base import KeyStore
from feature_worker.stores.redis_cluster import NodeScripts, cluster_reachable

# KEYS: the customers' key names; ARGV: their new wrapped keys. Returns the key each one has now.
_CREATE = """
local out = {}
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'NX')
  out[i] = redis.call('GET', KEYS[i])
end
return out
"""


class RedisKeyStore(KeyStore):
    """Wrapped keys in Redis, beside the features they seal."""

    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self.client = client
        self._create = client.register_script(_CREATE)
        #: On a Redis Cluster a call's keys live in many slots: one script per node instead.
        self._nodes = NodeScripts(client) if isinstance(client, RedisCluster) else None

    async def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        ids = list(user_ids)
        if not ids:
            return {}
        names = [keys.data_key(u) for u in ids]
        with cluster_reachable("reading data keys"):
            if self._nodes is not None:
                values = await self._nodes.get_many(names)
            else:
                values = await self.client.mget(names)
        return {u: cast(bytes, v) for u, v in zip(ids, values, strict=True) if v is not None}

    async def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        ids = list(wrapped)
        if not ids:
            return {}
        with cluster_reachable("creating data keys"):
            if self._nodes is not None:
                names = [keys.data_key(u) for u in ids]
                values = await self._nodes.create_many(names, [wrapped[u] for u in ids])
                return dict(zip(ids, values, strict=True))
            values = await self._create(keys=[keys.data_key(u) for u in ids], args=[wrapped[u] for u in ids])
        return dict(zip(ids, values, strict=True))

    async def delete_user(self, user_id: str) -> bool:
        with cluster_reachable("destroying a data key"):
            return bool(await self.client.delete(keys.data_key(user_id)))
