"""The Redis feature store: the same interface as the in-process store, over `redis.asyncio`.

Key names come from `feature_worker.keys` (the layout, versioned, with its TTLs and the Redis Cluster
notes); two Lua scripts do the work, so that each side needs one round trip:

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

import asyncio
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from hiredis import pack_command as _pack_command
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feature_worker import keys
from feature_worker.decay import DAY_MS, scale_at
from feature_worker.errors import StoreUnavailable
from feature_worker.fold import FoldConfig, ItemDeltas
from feature_worker.state import UserState
from feature_worker.stores.base import FeatureStore, ItemStats, RequestFeatures

#: How many of the user's latest distinct items seed co-visitation candidates (as the memory store).
RECENT_SEEDS = 10
#: Neighbours returned per seed item.
NEIGHBOURS_PER_SEED = 50
#: Connections per process; a request waits for a free one (Redis answers one command at a time anyway).
MAX_CONNECTIONS = 32

# ARGV[1]: JSON {user_ttl, applied_ttl, pop, trend, covis, clock, ...}; then (features key, features,
# applied key, applied ids) for each user. Numbers that Redis must read as integers travel as strings.
_COMMIT = """
local m = cjson.decode(ARGV[1])
for i = 2, #ARGV, 4 do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', m.user_ttl)
  redis.call('SET', ARGV[i + 2], ARGV[i + 3], 'PX', m.applied_ttl)
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

# ARGV: user key ('' for none), covis key prefix, recent seeds, neighbours per seed, context items...
# Returns {features or false, seed, {member, score, ...}, ties or false, seed, ...}. The user's recent
# items are fields 1 (item dictionary, "\\0"-joined) and 2 (packed indices, oldest first) of
# aisle.v1.UserFeatures, which deterministic serialization writes first.
_READ = """
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
local blob = false
if ARGV[1] ~= '' then blob = redis.call('GET', ARGV[1]) end
local prefix, recent_seeds, per_seed = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local seeds, seen = {}, {}
for i = 5, #ARGV do
  seeds[#seeds + 1] = ARGV[i]
  seen[ARGV[i]] = true
end
local limit = recent_seeds + #seeds
if blob then
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
local out = {blob}
for _, item in ipairs(seeds) do
  local key = prefix .. item
  local top = redis.call('ZREVRANGE', key, 0, per_seed - 1, 'WITHSCORES')
  if #top > 0 then
    local ties = false
    if #top == 2 * per_seed then
      local last = top[#top]
      ties = redis.call('ZRANGEBYSCORE', key, last, last)
    end
    out[#out + 1] = item
    out[#out + 1] = top
    out[#out + 1] = ties
  end
end
return out
"""


@contextmanager
def _reachable(what: str) -> Iterator[None]:
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


def _decoded(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisFeatureStore(FeatureStore):
    """Features in Redis. One writer per user at a time (Kafka partitions by user), any number of readers."""

    def __init__(
        self, client: aioredis.Redis, config: FoldConfig = FoldConfig(), policy: keys.KeyPolicy = keys.KeyPolicy()
    ) -> None:
        self.client = client
        self.config = config
        self.policy = policy
        self._commit = client.register_script(_COMMIT)
        self._read = client.register_script(_READ)

    @classmethod
    def from_url(
        cls, url: str, config: FoldConfig = FoldConfig(), policy: keys.KeyPolicy = keys.KeyPolicy()
    ) -> RedisFeatureStore:
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
        names = [keys.user(u) for u in ids] + [keys.applied(u) for u in ids]
        with _reachable("loading users"):
            values = await self.client.mget(names)
        n = len(ids)
        users = {}
        for i, user_id in enumerate(ids):
            blob, applied = cast(bytes | None, values[i]), cast(bytes | None, values[n + i])
            users[user_id] = UserState.from_bytes(blob, applied or b"") if blob is not None else UserState()
        return users

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
            "covis_trim": policy.covis_cap * 5 // 4,
            "covis_ttl": str(policy.covis_ttl_ms),
            "clock": str(deltas.clock_ms),
            "clock_key": keys.CLOCK,
            "clock_member": keys.CLOCK_MEMBER,
        }
        args: list[str | bytes] = [json.dumps(meta, ensure_ascii=False, separators=(",", ":"))]
        for user_id, state in users.items():
            args += (keys.user(user_id), state.to_bytes(), keys.applied(user_id), state.applied_to_bytes())
        with _reachable("committing a batch"):
            await self._commit(args=args)

    # -- reader side -------------------------------------------------------------------------------
    async def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        """The user's features and the neighbours of the context and recent items: one script call.

        Neighbours are ranked by count, ties by item id, as the in-process store ranks them.
        """
        args: list[str | int] = [keys.user(user_id) if user_id else "", keys.COVIS_PREFIX, RECENT_SEEDS,
                                 NEIGHBOURS_PER_SEED, *context_item_ids]
        with _reachable("reading a request's features"):
            out = await self._read(args=args)
        blob = out[0]
        user = UserState.from_bytes(blob) if blob else None
        covis: dict[str, list[tuple[str, float]]] = {}
        for i in range(1, len(out), 3):
            top, ties = out[i + 1], out[i + 2]
            ranked = [(_decoded(top[j]), float(top[j + 1])) for j in range(0, len(top), 2)]
            if ties:
                last = ranked[-1][1]
                ranked = [pair for pair in ranked if pair[1] > last] + [(_decoded(t), last) for t in ties]
            ranked.sort(key=_by_weight_desc)
            covis[_decoded(out[i])] = ranked[:NEIGHBOURS_PER_SEED]
        return RequestFeatures(user=user, covis=covis)

    async def item_stats(self) -> ItemStats:
        """Popularity and trending at the stream clock: two round trips (the clock names the days).

        The replies are turned into numbers in a worker thread: for a large catalog that is milliseconds
        that requests on the event loop need not wait for. (Returning each hash as one string from a
        script would move the parsing off the loop too, but keeps Redis busy three times as long.)
        """
        with _reachable("reading item stats"):
            clock_score = await self.client.zscore(keys.CLOCK, keys.CLOCK_MEMBER)
            clock = int(clock_score or 0)
            today = clock // DAY_MS
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(keys.POPULARITY)
            pipe.hgetall(keys.trend(today))
            pipe.hgetall(keys.trend(today - 1))
            raw_pop, raw_today, raw_yesterday = await pipe.execute()
        return await asyncio.to_thread(
            _item_stats, clock, self.config.half_life_ms, raw_pop, raw_today, raw_yesterday
        )

    async def delete_user(self, user_id: str) -> bool:
        with _reachable("deleting a user"):
            return bool(await self.client.delete(keys.user(user_id), keys.applied(user_id)))

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


def _item_stats(
    clock: int, half_life_ms: float, raw_pop: dict[bytes, bytes], raw_today: dict[bytes, bytes],
    raw_yesterday: dict[bytes, bytes],
) -> ItemStats:
    # C-level loops (map, zip, numpy) rather than a Python loop per item: this runs every second over
    # the whole catalog while holding the GIL, and requests wait for it.
    scale = scale_at(clock, half_life_ms)
    with np.errstate(all="ignore"):  # an overflow gives inf, as Python floats would, without a warning
        weights = np.fromiter(map(float, raw_pop.values()), dtype=np.float64, count=len(raw_pop)) * scale
    popularity = dict(zip(map(bytes.decode, raw_pop), weights.tolist()))
    # A sliding 24 hours: all of today plus the part of yesterday still inside the window.
    yesterday_share = 1.0 - (clock - (clock // DAY_MS) * DAY_MS) / DAY_MS
    trending = dict(zip(map(bytes.decode, raw_today), map(float, raw_today.values())))
    shares = np.fromiter(map(float, raw_yesterday.values()), dtype=np.float64, count=len(raw_yesterday))
    get = trending.get
    with np.errstate(all="ignore"):
        shares *= yesterday_share
    for name, share in zip(map(bytes.decode, raw_yesterday), shares.tolist()):
        trending[name] = get(name, 0.0) + share
    return ItemStats(popularity=popularity, trending=trending, clock_ms=clock)


def _by_weight_desc(pair: tuple[str, float]) -> tuple[float, str]:
    return (-pair[1], pair[0])

