"""Sealing, master and data keys, the key stores and the vault; and, against a real Redis, that sealed features
read the same in one script call while the seeds hold, and that a commit racing an erasure writes nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from feature_worker import keys
from feature_worker.apply import apply_events, fold_batch
from feature_worker.catalog import Catalog
from feature_worker.privacy.keystores.file import FileKeyStore
from feature_worker.privacy.keystores.memory import MemoryKeyStore
from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.sealing import (
    EVENT,
    FEATURES,
    MasterKey,
    MasterKeyError,
    Unreadable,
    is_sealed,
    open_sealed,
    seal,
    write_master_key,
)
from feature_worker.privacy.vault import EncryptionNotConfigured, Vault, load_master_key
from feature_worker.stores.redis import RedisFeatureStore
from tests.shop import BASE_TS, item, view


def master() -> MasterKey:
    return MasterKey(bytes(range(32)))


def test_a_sealed_value_opens_only_for_its_customer_and_field() -> None:
    wrapped, aead = master().new_data_key("u1")
    value = seal(aead, "u1", EVENT, b"payload")
    assert is_sealed(value) and b"payload" not in value
    assert open_sealed(aead, "u1", EVENT, value) == b"payload"
    for user, field in (("u2", EVENT), ("u1", FEATURES)):
        with pytest.raises(Unreadable):
            open_sealed(aead, user, field, value)
    with pytest.raises(Unreadable):
        open_sealed(aead, "u1", EVENT, value[:-1] + bytes([value[-1] ^ 1]))  # altered
    _, other = master().new_data_key("u1")
    with pytest.raises(Unreadable):
        open_sealed(other, "u1", EVENT, value)  # a new key (erased, then back) opens nothing of the old
    # The wrapped key only unwraps for its customer, under its master key.
    assert open_sealed(master().unwrap("u1", wrapped), "u1", EVENT, value) == b"payload"
    with pytest.raises(Unreadable):
        master().unwrap("u2", wrapped)
    with pytest.raises(Unreadable):
        MasterKey(bytes(32)).unwrap("u1", wrapped)


def test_master_key_files(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    assert write_master_key(path) and not write_master_key(path)  # never overwritten
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(base64.b64decode(path.read_text())) == 32
    MasterKey.load(path)
    (tmp_path / "bad").write_text("not base64!")
    with pytest.raises(MasterKeyError):
        MasterKey.load(tmp_path / "bad")
    with pytest.raises(MasterKeyError):
        MasterKey.load(tmp_path / "missing")
    with pytest.raises(EncryptionNotConfigured):
        load_master_key("on", None)
    assert load_master_key("off", None) is None


async def test_the_file_key_store_is_durable_and_erasure_removes_the_key_from_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.txt"
    store = FileKeyStore(path)
    assert await store.create_many({"u1": b"k1", "u2": b"k2"}) == {"u1": b"k1", "u2": b"k2"}
    assert await store.create_many({"u1": b"other", "u3": b"k3"}) == {"u1": b"k1", "u3": b"k3"}  # first wins
    with open(path, "ab") as f:  # noqa: ASYNC230 - the test writes a torn line, nothing else runs
        f.write(b"u4\tdG9ybg")  # a torn last line (a crash mid-write)
    await store.close()
    store = FileKeyStore(path)
    assert await store.get_many(["u1", "u2", "u3", "u4"]) == {"u1": b"k1", "u2": b"k2", "u3": b"k3"}
    assert await store.delete_user("u2") and not await store.delete_user("u2")
    assert b"u2" not in path.read_bytes() and base64.b64encode(b"k2") not in path.read_bytes()
    await store.create_many({"u5": b"k5"})
    await store.close()
    reopened = FileKeyStore(path)
    assert await reopened.get_many(["u1", "u2", "u3", "u5"]) == {"u1": b"k1", "u3": b"k3", "u5": b"k5"}
    for user in ("u1", "u3"):  # erased lines now outweigh live ones: the next open drops them
        assert await reopened.delete_user(user)
    await reopened.close()
    size = path.stat().st_size
    compacted = FileKeyStore(path)
    assert path.stat().st_size < size and await compacted.get_many(["u1", "u3", "u5"]) == {"u5": b"k5"}
    assert await compacted.delete_user("u5") and not await compacted.get_many(["u5"])
    await compacted.close()


async def test_the_vault_caches_by_the_stored_form_and_forgets_on_erasure() -> None:
    vault = Vault(master(), MemoryKeyStore(), cache_size=2)
    first = (await vault.keys(["u1"], create=True))["u1"]
    assert (await vault.keys(["u1"], create=True))["u1"].wrapped == first.wrapped  # kept, not replaced
    value = seal(first.aead, "u1", EVENT, b"x")
    assert vault.cipher("u1", first.wrapped) is first.aead  # a cache hit
    assert await vault.delete_user("u1") and await vault.keys(["u1"]) == {}
    again = (await vault.keys(["u1"], create=True))["u1"]
    assert again.wrapped != first.wrapped
    with pytest.raises(Unreadable):
        open_sealed(vault.cipher("u1", again.wrapped), "u1", EVENT, value)
    await vault.keys(["u2", "u3"], create=True)
    assert vault.cached("u1") is None and vault.cached("u3") is not None  # bounded: least recent goes


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/6")
    await client.flushdb()
    yield client
    await client.aclose()


def sealed(client: aioredis.Redis) -> RedisFeatureStore:
    store = RedisFeatureStore(client)
    store.vault = Vault(master(), RedisKeyStore(client))
    return store


@pytest.mark.integration
async def test_sealed_features_read_in_one_call_while_the_seeds_hold(redis_client: aioredis.Redis) -> None:
    catalog = Catalog()
    # Ids long enough that the ciphertext never holds one by chance (a 2-byte id did, 1 run in ~300).
    catalog.upsert_many([item(f"item-{n}") for n in range(6)])
    store = sealed(redis_client)
    await apply_events(
        store,
        catalog,
        [
            view("u1", "item-0", BASE_TS),
            view("u1", "item-1", BASE_TS + 1000),
            view("u2", "item-1", BASE_TS),
            view("u2", "item-2", BASE_TS + 1000),
        ],
    )
    raw = await redis_client.get(keys.user("u1"))
    assert isinstance(raw, bytes) and is_sealed(raw) and b"item-0" not in raw
    first = await store.read_request("u1", ())
    assert store.second_reads == 1 and set(first.covis) == {
        "item-0",
        "item-1",
    }  # seeds unknown before the first read
    again = await store.read_request("u1", ())
    assert store.second_reads == 1 and again.covis == first.covis and again.user == first.user
    await apply_events(store, catalog, [view("u1", "item-3", BASE_TS + 2000)])
    moved = await store.read_request("u1", ())
    assert moved.user is not None and [i for *_, i in moved.user.recent][-1] == "item-3"
    assert store.second_reads == 2 and "item-3" in moved.covis
    await store.delete_user("u1")
    assert (await store.read_request("u1", ())).user is None


@pytest.mark.integration
async def test_a_commit_racing_an_erasure_does_not_bring_the_user_back(redis_client: aioredis.Redis) -> None:
    catalog = Catalog()
    catalog.upsert_many([item("i0"), item("i1")])
    store = sealed(redis_client)
    assert store.vault is not None
    users = await store.load_users(["u1"])  # the worker loaded the user (and their key) ...
    changed, deltas, _ = fold_batch(
        users, catalog, [view("u1", "i0", BASE_TS), view("u1", "i1", BASE_TS + 1)]
    )
    await store.vault.store.delete_user("u1")  # ... an erasure destroyed the key meanwhile ...
    await store.delete_user("u1")
    await store.commit(changed, deltas)  # ... and the commit lands after it
    assert await redis_client.exists(keys.user("u1"), keys.applied("u1"), keys.data_key("u1")) == 0
    assert (await store.item_stats()).popularity  # the shop's counters still count the events
