"""Stores that open what the servers and workers of the tests seal: they run with the development master key
(`loadtest.harness.children.with_master_key`), so a test reading Redis behind them uses the same key."""

from __future__ import annotations

from pathlib import Path

from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.sealing import MasterKey
from feature_worker.privacy.vault import Vault
from feature_worker.stores.redis import RedisFeatureStore
from feature_worker.stores.redis_cluster import redis_store_from_url
from loadtest.harness.children import with_master_key


def dev_master_key() -> MasterKey:
    return MasterKey.load(Path(with_master_key({})["AISLE_MASTER_KEY_FILE"]))


def sealed_store(url: str) -> RedisFeatureStore:
    """A Redis (or Redis Cluster) feature store that seals and opens with the development key, as the test
    processes do."""
    store = redis_store_from_url(url)
    store.vault = Vault(dev_master_key(), RedisKeyStore(store.client))
    return store
