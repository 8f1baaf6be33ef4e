"""The Redis feature store: the same interface as the in-process store, over `redis.asyncio`.

Key names come from `feature_worker.keys` (the layout, versioned, with its TTLs and the Redis Cluster
notes); two Lua scripts do the work, so that each side needs one round trip (on a Redis Cluster,
`stores.redis_cluster` splits them by node):

- `commit` writes a whole batch in one script: every user's features and applied ids (SET with TTL)
  and every item increment (popularity, trending, co-visitation with its trim, the stream clock).
  A script runs atomically, and with AOF it is logged as one MULTI/EXEC block, so a batch is applied
  all or nothing, whether the worker or Redis dies: never a user written without the item increments
  its events made, nor the reverse. That is what makes redelivery safe: a redelivered event is
  recognised by the applied ids stored with its user, and increments are only made for events not
  recognised, so nothing counts twice (see `feature_worker.apply`).
- `read_request` reads the user's features, then the co-visitation neighbours of the context items and
  of the user's latest distinct items, in one script (the seeds are only known once the user is read).

Only `RedisError`s that mean "Redis cannot be reached" become `StoreUnavailable`; the worker retries
those, the server answers UNAVAILABLE.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from hiredis import pack_command as _pack_command
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feature_worker import keys
from feature_worker.decay import DAY_MS, scale_at
from feature_worker.errors import StoreUnavailable
from feature_worker.fold import FoldConfig, ItemDeltas
from feature_worker.privacy.sealing import FEATURES, Unreadable, is_sealed, open_sealed, seal
from feature_worker.state import UserState
from feature_worker.stores.base import FeatureStore, ItemStats, RequestFeatures
from feature_worker.stores.bounds import (
    NEIGHBOURS_PER_SEED,
    RECENT_SEEDS,
    covis_trim_at,
    recent_seeds,
    yesterday_share,
)
from feature_worker.stores.neighbour_lists import NeighbourLists

if TYPE_CHECKING:
    from feature_worker.privacy.vault import Vault

log = logging.getLogger(__name__)

#: Connections per process; a request waits for a free one (Redis answers one command at a time anyway).
MAX_CONNECTIONS = 32
#: Users whose co-visitation seeds a server process remembers (encryption on; see `read_request`).
SEED_HINTS = 100_000
#: Fields asked for per HSCAN call when the shop-wide hashes are read (`item_stats`; see `_hash_chunks`).
STATS_CHUNK = 1_000

# ARGV[1]: JSON {user_ttl, applied_ttl, pop, trend, covis, clock, stride, ...}; then (features key, features,
# applied key, applied ids) for each user, and with encryption (stride 6) also (data key name, the wrapped key
# the features were sealed with): a user is only written while that key is still theirs, so a batch folded
# across an erasure cannot bring the user back. Numbers that Redis must read as integers travel as strings.
_COMMIT = """
local m = cjson.decode(ARGV[1])
local stride = m.stride
for i = 2, #ARGV, stride do
  if stride == 4 or redis.call('GET', ARGV[i + 4]) == ARGV[i + 5] then
    redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', m.user_ttl)
    redis.call('SET', ARGV[i + 2], ARGV[i + 3], 'PX', m.applied_ttl)
  end
end
local pop = m.pop
if #pop > 0 then
  for i = 1, #pop, 2 do redis.call('HINCRBYFLOAT', m.pop_key, pop[i], pop[i + 1]) end
  redis.call('PEXPIRE', m.pop_key, m.pop_ttl)
end
for _, day in ipairs(m.trend) do
  local key, inc = day[1], day[2]
  for i = 1, #inc, 2 do redis.call('HINCRBYFLOAT', key, inc[i], inc[i + 1]) end
  redis.call('PEXPIRE', key, m.trend_ttl)
end
local cap, trim_at = m.covis_cap, m.covis_trim
for _, row in ipairs(m.covis) do
  local key, inc = row[1], row[2]
  for i = 1, #inc, 2 do redis.call('ZINCRBY', key, inc[i + 1], inc[i]) end
  local n = redis.call('ZCARD', key)
  if n > trim_at then redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1) end
  redis.call('PEXPIRE', key, m.covis_ttl)
end
if m.clock ~= '0' then
  redis.call('ZADD', m.clock_key, 'GT', m.clock, m.clock_member)
  redis.call('PEXPIRE', m.clock_key, m.pop_ttl)
end
return 1
"""

# ARGV: user key ('' for none), data key name ('' for none), covis key prefix, recent seeds, neighbours per
# seed, seed items (the context items, then with encryption the seeds this process expects)...
# Returns {features or false, wrapped data key or false, seed, {member, score, ...}, ties or false, seed, ...}.
# The user's recent items are fields 1 (item dictionary, "\\0"-joined) and 2 (packed indices, oldest first)
# of aisle.v1.UserFeatures, which deterministic serialization writes first; sealed features (first byte 0)
# cannot be read here, and the caller names the seeds.
_READ_SEEDS = """
local function varint(s, pos)
  local result, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    pos = pos + 1
    result = result + (b % 128) * mul
    if b < 128 then return result, pos end
    mul = mul * 128
  end
end
local blob, wrapped = false, false
if ARGV[1] ~= '' then blob = redis.call('GET', ARGV[1]) end
if ARGV[2] ~= '' then wrapped = redis.call('GET', ARGV[2]) end
local prefix, recent_seeds, per_seed = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local seeds, seen = {}, {}
for i = 6, #ARGV do
  seeds[#seeds + 1] = ARGV[i]
  seen[ARGV[i]] = true
end
local limit = recent_seeds + #seeds
if blob and string.byte(blob, 1) ~= 0 then
  local dict, order = {}, {}
  local pos, n = 1, #blob
  while pos <= n do
    local tag
    tag, pos = varint(blob, pos)
    if tag == 10 then
      local len
      len, pos = varint(blob, pos)
      local s = string.sub(blob, pos, pos + len - 1)
      pos = pos + len
      local start = 1
      while true do
        local z = string.find(s, '\\0', start, true)
        if not z then dict[#dict + 1] = string.sub(s, start); break end
        dict[#dict + 1] = string.sub(s, start, z - 1)
        start = z + 1
      end
    elseif tag == 18 then
      local len
      len, pos = varint(blob, pos)
      local stop = pos + len
      while pos < stop do
        local v
        v, pos = varint(blob, pos)
        order[#order + 1] = v
      end
    else
      break
    end
  end
  for i = #order, 1, -1 do
    if #seeds >= limit then break end
    local item = dict[order[i] + 1]
    if item and not seen[item] then
      seen[item] = true
      seeds[#seeds + 1] = item
    end
  end
end
"""
# The top `per_seed` neighbours of a co-visitation key with their scores, and the members tied with the last one
# (false when fewer came back: then no tie was cut off). Shared with the Cluster's read (`stores.redis_cluster`).
TOP_NEIGHBOURS = """
local function top_neighbours(key, per_seed)
  local top = redis.call('ZREVRANGE', key, 0, per_seed - 1, 'WITHSCORES')
  local ties = false
  if #top == 2 * per_seed then
    local last = top[#top]
    ties = redis.call('ZRANGEBYSCORE', key, last, last)
  end
  return top, ties
end
"""
_NEIGHBOURS_OF_SEEDS = (
    TOP_NEIGHBOURS
    + """
local out = {blob, wrapped}
for _, item in ipairs(seeds) do
  local top, ties = top_neighbours(prefix .. item, per_seed)
  if #top > 0 then
    out[#out + 1] = item
    out[#out + 1] = top
    out[#out + 1] = ties
  end
end
return out
"""
)
_READ = _READ_SEEDS + _NEIGHBOURS_OF_SEEDS


@contextmanager
def reachable(what: str) -> Iterator[None]:
    """Connection trouble becomes `StoreUnavailable` (retryable); other Redis errors are bugs."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unavailable ({what}): {exc}") from exc


class _HiredisPacking:
    """Commands packed by hiredis (C) instead of redis.asyncio's Python packer.

    A batch's MGET and commit carry four arguments per user (a few thousand per batch), which the
    Python packer encodes one by one: several percent of the worker's CPU (py-spy, 1M-event drain).
    The bytes sent are the same for the argument types the stores use (str, bytes, int); anything else
    (floats, whose text form could differ) goes through the Python packer.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        command = args[0]
        if isinstance(command, str) and " " not in command and all(type(a) in _C_PACKED for a in args):
            return [_pack_command(args)]
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_C_PACKED = frozenset({str, bytes, int})


def _packing_in_c(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


class RedisFeatureStore(FeatureStore):
    """Features in Redis. One writer per user at a time (Kafka partitions by user), any number of readers.

    With a `vault` (encryption on) each user's features are sealed with their data key (`x1{<user>}`, beside
    them): `load_users` fetches the keys with the features (creating keys for users without one), `commit`
    seals with them and writes a user only while that key is still theirs, and `read_request` gets the key in
    the same script call as the features. Features stored in clear (before encryption was turned on) are
    still read, and sealed when next written.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        config: FoldConfig = FoldConfig(),
        policy: keys.KeyPolicy = keys.KeyPolicy(),
        vault: Vault | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.policy = policy
        self.vault = vault
        self._commit = client.register_script(_COMMIT)
        self._read = client.register_script(_READ)
        #: user -> the recent-item seeds of their last read (encryption on): the next read asks for their
        #: neighbours in the same script call as the features. Bounded (LRU); an erasure drops the entry.
        self._hints: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: Reads that needed a second call because the user's seeds had changed (encryption on).
        self.second_reads = 0
        #: The neighbour lists of the reads, decoded once per content (`NeighbourLists`).
        self._lists = NeighbourLists()

    @classmethod
    def from_url(
        cls, url: str, config: FoldConfig = FoldConfig(), policy: keys.KeyPolicy = keys.KeyPolicy()
    ) -> RedisFeatureStore:
        """A store on its own connection pool; set `vault` afterwards to seal (its key store shares `client`)."""
        # A blocking pool: under a burst, requests queue for one of the connections instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=10, socket_connect_timeout=2.0, socket_timeout=30.0
        )
        pool.connection_class = _packing_in_c(pool.connection_class)
        return cls(aioredis.Redis(connection_pool=pool), config, policy)

    # -- writer side -------------------------------------------------------------------------------
    async def load_users(self, user_ids: Collection[str]) -> dict[str, UserState]:
        """One MGET of every user's two keys; users never seen (or expired) start empty."""
        ids = list(user_ids)
        if not ids:
            return {}
        vault = self.vault
        names = [keys.user(u) for u in ids] + [keys.applied(u) for u in ids]
        if vault is not None:
            names += [keys.data_key(u) for u in ids]
        with reachable("loading users"):
            values = await self._get_many(names)
        n = len(ids)
        users = {}
        if vault is None:
            for i, user_id in enumerate(ids):
                blob, applied = cast(bytes | None, values[i]), cast(bytes | None, values[n + i])
                users[user_id] = (
                    UserState.from_bytes(blob, applied or b"") if blob is not None else UserState()
                )
            return users
        wrapped = {
            u: cast(bytes, values[2 * n + i]) for i, u in enumerate(ids) if values[2 * n + i] is not None
        }
        missing = [u for u in ids if u not in wrapped]
        if missing:  # users seen for the first time (or events from producers that write in clear): new keys
            with reachable("creating data keys"):
                created = await vault.keys(missing, create=True)
            wrapped.update((u, k.wrapped) for u, k in created.items())
        for i, user_id in enumerate(ids):
            blob, applied = cast(bytes | None, values[i]), cast(bytes | None, values[n + i])
            aead = vault.cipher(user_id, wrapped[user_id])
            if blob is not None and is_sealed(blob):
                try:
                    blob = open_sealed(aead, user_id, FEATURES, blob)
                except Unreadable:
                    blob = None  # sealed with a key destroyed since (an erasure): nothing of it is readable
            users[user_id] = UserState.from_bytes(blob, applied or b"") if blob is not None else UserState()
        return users

    async def _get_many(self, names: list[str]) -> list[Any]:
        """MGET: one round trip (the Cluster store splits it per slot)."""
        return cast(list[Any], await self.client.mget(names))

    async def commit(self, users: Mapping[str, UserState], deltas: ItemDeltas) -> None:
        """Write the users and add the item deltas in one atomic script (see the module docstring)."""
        policy = self.policy
        # Grouped by Redis key, keys and entries in the order they were first touched.
        trend: dict[int, list[Any]] = {}
        for (item, day), weight in deltas.trend.items():
            row = trend.get(day)
            if row is None:
                trend[day] = [item, weight]
            else:
                row += (item, weight)
        covis: dict[str, list[Any]] = {}
        for (item, other), count in deltas.covis.items():
            row = covis.get(item)
            if row is None:
                covis[item] = [other, count]
            else:
                row += (other, count)
        prefix = keys.COVIS_PREFIX
        meta = {
            "user_ttl": str(policy.user_ttl_ms),
            "applied_ttl": str(policy.applied_ttl_ms),
            "pop_key": keys.POPULARITY,
            "pop_ttl": str(policy.pop_ttl_ms),
            "pop": list(chain.from_iterable(deltas.popularity.items())),
            "trend": [[keys.trend(day), inc] for day, inc in trend.items()],
            "trend_ttl": str(policy.trend_ttl_ms),
            "covis": [[prefix + item, inc] for item, inc in covis.items()],
            "covis_cap": policy.covis_cap,
            "covis_trim": covis_trim_at(policy.covis_cap),
            "covis_ttl": str(policy.covis_ttl_ms),
            "clock": str(deltas.clock_ms),
            "clock_key": keys.CLOCK,
            "clock_member": keys.CLOCK_MEMBER,
            "stride": 4 if self.vault is None else 6,
        }
        args: list[str | bytes] = [json.dumps(meta, ensure_ascii=False, separators=(",", ":"))]
        vault = self.vault
        if vault is None:
            for user_id, state in users.items():
                args += (
                    keys.user(user_id),
                    state.to_bytes(),
                    keys.applied(user_id),
                    state.applied_to_bytes(),
                )
        else:
            for user_id, state in users.items():
                key = vault.cached(user_id)
                if key is None:  # evicted since `load_users` (more users in flight than the cache holds)
                    raise StoreUnavailable(
                        f"the data key of a user in the batch left the cache; raise "
                        f"AISLE_KEY_CACHE_SIZE above {vault.cache_size}"
                    )
                args += (
                    keys.user(user_id),
                    seal(key.aead, user_id, FEATURES, state.to_bytes()),
                    keys.applied(user_id),
                    state.applied_to_bytes(),
                    keys.data_key(user_id),
                    key.wrapped,
                )
        with reachable("committing a batch"):
            await self._commit(args=args)

    # -- reader side -------------------------------------------------------------------------------
    async def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        """The user's features and the neighbours of the context and recent items: one script call.

        Neighbours are ranked by count, ties by item id, as the in-process store ranks them.
        """
        vault = self.vault
        if vault is None or not user_id:
            args: list[str | int] = [
                keys.user(user_id) if user_id else "",
                "",
                keys.COVIS_PREFIX,
                RECENT_SEEDS,
                NEIGHBOURS_PER_SEED,
                *context_item_ids,
            ]
            with reachable("reading a request's features"):
                out = await self._read(args=args)
            blob = out[0]
            return RequestFeatures(
                user=UserState.from_bytes(blob) if blob else None, covis=self._lists.decode(out)
            )
        return await self._read_sealed(vault, user_id, context_item_ids)

    async def _read_sealed(
        self, vault: Vault, user_id: str, context_item_ids: Sequence[str]
    ) -> RequestFeatures:
        """`read_request` with sealed features: still one script call while the user's seeds are unchanged.

        The script cannot open the features, so it cannot find the recent items whose neighbours to read; it
        reads the neighbours of the seeds this process found at the user's last read instead (`_hints`), with
        the features and the wrapped key. Once the features are open, seeds it did not read (the user acted
        since) are read in a second call. The answer is the same as without encryption.
        """
        hints = self._hints.get(user_id, ())
        asked = list(dict.fromkeys((*context_item_ids, *hints)))
        args: list[str | int] = [
            keys.user(user_id),
            keys.data_key(user_id),
            keys.COVIS_PREFIX,
            RECENT_SEEDS,
            NEIGHBOURS_PER_SEED,
            *asked,
        ]
        with reachable("reading a request's features"):
            out = await self._read(args=args)
        blob, wrapped = out[0], out[1]
        covis = self._lists.decode(out)
        user = None
        if blob:
            if not is_sealed(blob):
                user = UserState.from_bytes(
                    blob
                )  # written before encryption was on; the script read its seeds
                return RequestFeatures(user=user, covis=covis)
            if wrapped:
                try:
                    user = UserState.from_bytes(
                        open_sealed(vault.cipher(user_id, wrapped), user_id, FEATURES, blob)
                    )
                except Unreadable:
                    log.warning("features of a user could not be opened with their key; read as unknown")
        if user is None:
            self._hints.pop(user_id, None)
            return RequestFeatures(user=None, covis={i: covis[i] for i in context_item_ids if i in covis})
        seeds = recent_seeds(user, context_item_ids)
        fetched = set(asked)
        missing = [item for item in seeds if item not in fetched]
        if missing:
            self.second_reads += 1
            with reachable("reading a request's features"):
                more = await self._read(
                    args=["", "", keys.COVIS_PREFIX, RECENT_SEEDS, NEIGHBOURS_PER_SEED, *missing]
                )
            covis.update(self._lists.decode(more))
        hints_now = tuple(seeds[len(context_item_ids) :])
        if hints_now != hints:
            self._hints[user_id] = hints_now
            self._hints.move_to_end(user_id)
            if len(self._hints) > SEED_HINTS:
                self._hints.popitem(last=False)
        return RequestFeatures(user=user, covis={item: covis[item] for item in seeds if item in covis})

    async def item_stats(self) -> ItemStats:
        """Popularity and trending at the stream clock: the clock (it names the days), then the three hashes in
        chunks (`_hash_chunks`), each chunk turned into numbers as it arrives, on the event loop: a fraction of
        a millisecond each, with requests served in between. (Whole, the numbers took a thread holding the GIL
        for 11–16 ms at every refresh of a 20,000-item shop, every second in every server process.)
        """
        with reachable("reading item stats"):
            clock_score = await self.client.zscore(keys.CLOCK, keys.CLOCK_MEMBER)
            clock = int(clock_score or 0)
            today = clock // DAY_MS
            popularity: dict[str, float] = {}
            scale = scale_at(clock, self.config.half_life_ms)
            async for part in self._hash_chunks(keys.POPULARITY):
                popularity.update(_scaled(part, scale))
            trending: dict[str, float] = {}
            async for part in self._hash_chunks(keys.trend(today)):
                trending.update(_scaled(part, 1.0))
            # Collected before they are added: HSCAN may return a field twice, and a second addition would count.
            yesterday: dict[str, float] = {}
            share = yesterday_share(clock)
            async for part in self._hash_chunks(keys.trend(today - 1)):
                yesterday.update(_scaled(part, share))
        get = trending.get
        for name, value in yesterday.items():
            trending[name] = get(name, 0.0) + value
        return ItemStats(popularity=popularity, trending=trending, clock_ms=clock)

    async def _hash_chunks(self, name: str) -> AsyncIterator[dict[bytes, bytes]]:
        """A hash's fields, about `STATS_CHUNK` at a time (HSCAN; a field may come twice).

        Not HGETALL: its reply is turned into Python objects on the event loop in one go, and the three hashes
        of a 20,000-item shop, pipelined, held the loop for 15–18 ms at every refresh. In chunks the loop
        serves requests in between (its lag while the hashes are read: max 17.3 → 4.4 ms, p99 9.3 → 1.95 ms;
        BENCHMARKS.md, thirteenth pass), for about twice Redis's CPU per field. The chunks are not one snapshot:
        a counter incremented meanwhile may be read before or after the increment, as by a refresh a moment
        earlier or later.
        """
        cursor = 0
        while True:
            cursor, part = await self.client.hscan(name, cursor, count=STATS_CHUNK)
            yield cast(dict[bytes, bytes], part)
            if cursor == 0:
                return

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user's features and applied ids (their data key is the key store's: `RedisKeyStore`)."""
        self._hints.pop(user_id, None)
        with reachable("deleting a user"):
            return bool(await self.client.delete(keys.user(user_id), keys.applied(user_id)))

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


def _scaled(part: dict[bytes, bytes], scale: float) -> dict[str, float]:
    """One chunk of a counter hash as names and numbers, times ``scale`` (an overflow gives inf, as it does in
    the in-process store)."""
    return dict(zip(map(bytes.decode, part), [float(value) * scale for value in part.values()]))
