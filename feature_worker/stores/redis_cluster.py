"""The Redis feature store on a Redis Cluster: the same behaviour as `stores.redis`, split by node.

A Lua script runs on one node, so what the single-Redis store does in one script is done here in one script
per node, with the layout of
`feature_worker.keys` (its "Redis Cluster" notes):

- `commit`, in three steps, each one round trip to every node concerned, in parallel:
  1. per node, one script writes the users of that node (features, applied ids, the data-key check) and
     adds the item increments their events made to the node's outbox as one entry (`o1{<slot tag>}`);
  2. per node, one script applies each entry's increments to the item keys the node holds, unless that
     node's marker of the entry (`m1:<entry>{<slot tag>}`, set in the same script) says it already did;
  3. the entries are deleted.
  A user's write and the increments its events made are therefore all or nothing together (step 1 is one
  script), and every entry is applied once per node (step 2): a worker killed between the steps leaves
  entries that `recover` (run at a worker's start) or the next commit applies. Redelivered events are
  recognised by the applied ids stored with their user, as on one Redis, so nothing counts twice.
  The fold splits the deltas by the user's node (`delta_group`); a batch whose users moved to another
  node since it was folded (failover, resharding) is refused as `StoreUnavailable` and folded again.
- `read_request`: one script on the user's slot reads the features and the wrapped key and finds the seed
  items (the context items, then the latest distinct items of clear features); then one script per node
  holding seeds' co-visitation keys reads their neighbours, in parallel. Two round trips (one when there is
  no seed), the same answer as on one Redis.
- `load_users` (and the key store's reads and creations, `NodeScripts`): one script per node for the keys it
  holds, the nodes in parallel; `item_stats`: as on one Redis.

Differences from one Redis: a batch's increments reach each item key in one addition per user node instead
of one (float sums may differ in the last bits), and a co-visitation set is trimmed after each of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha1
from itertools import chain
from typing import Any, cast

import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from feature_worker import keys
from feature_worker.errors import StoreUnavailable
from feature_worker.fold import FoldConfig, ItemDeltas
from feature_worker.privacy.sealing import FEATURES, Unreadable, is_sealed, open_sealed, seal
from feature_worker.state import UserState
from feature_worker.stores.base import ItemStats, RequestFeatures
from feature_worker.stores.bounds import NEIGHBOURS_PER_SEED, RECENT_SEEDS, covis_trim_at, recent_seeds
from feature_worker.stores.neighbour_lists import decoded
from feature_worker.stores.redis import (
    _READ_SEEDS,
    MAX_CONNECTIONS,
    TOP_NEIGHBOURS,
    RedisFeatureStore,
    reachable,
)

log = logging.getLogger(__name__)

#: How a `cross_slot` script (see `_Script`) rebuilds its key names as `K`: KEYS[1], then the ARGV after their
#: count.
_KEYS_PROLOGUE = """local nk = tonumber(ARGV[1])
local K = {KEYS[1]}
for i = 1, nk do K[i + 1] = ARGV[i + 1] end
"""
#: ... and its own arguments, the ARGV after the key names, as `A`.
_ARGS_PROLOGUE = """local A = {}
for i = nk + 2, #ARGV do A[#A + 1] = ARGV[i] end
"""


def _cross_slot_lua(body: str, *, writes: bool = True, own_args: bool = True) -> str:
    """A `cross_slot` script: its flags (`allow-cross-slot-keys`, and `no-writes` for one that only reads), the
    prologue that gives it `K` (and, with `own_args`, `A`), then ``body``."""
    flags = "allow-cross-slot-keys" if writes else "allow-cross-slot-keys,no-writes"
    return f"#!lua flags={flags}\n" + _KEYS_PROLOGUE + (_ARGS_PROLOGUE if own_args else "") + body


# K: the node's outbox, then per user (features key, applied key[, data key]); A[1]: JSON {stride,
# user_ttl, applied_ttl, entry}; A[2]: the entry's increments ('' for none); then per user (features,
# applied ids[, the wrapped key they were sealed with]). As `stores.redis._COMMIT`: a user is written only
# while the key is still theirs.
_COMMIT_USERS = _cross_slot_lua(
    """local m = cjson.decode(A[1])
local stride = m.stride
local a = 3
for k = 2, #K, stride do
  if stride == 2 or redis.call('GET', K[k + 2]) == A[a + 2] then
    redis.call('SET', K[k], A[a], 'PX', m.user_ttl)
    redis.call('SET', K[k + 1], A[a + 1], 'PX', m.applied_ttl)
  end
  a = a + stride
end
if A[2] ~= '' then redis.call('HSET', K[1], m.entry, A[2]) end
return 1
"""
)

# K: markers and item keys (the entries name them by index); A[1]: JSON {ttls, caps, entries: [[marker index,
# [kind, key index, inc], ...], ...]} with kind p (popularity hash), t (a day's trending hash), c (co-visitation zset), k (the clock).
_APPLY_ITEMS = _cross_slot_lua(
    """local m = cjson.decode(A[1])
local cap, trim_at = m.covis_cap, m.covis_trim
for _, e in ipairs(m.entries) do
  if redis.call('SET', K[e[1]], '1', 'NX', 'PX', m.marker_ttl) then
    for i = 2, #e do
      local kind, key, inc = e[i][1], K[e[i][2]], e[i][3]
      if kind == 'p' or kind == 't' then
        for j = 1, #inc, 2 do redis.call('HINCRBYFLOAT', key, inc[j], inc[j + 1]) end
        redis.call('PEXPIRE', key, kind == 'p' and m.pop_ttl or m.trend_ttl)
      elseif kind == 'c' then
        for j = 1, #inc, 2 do redis.call('ZINCRBY', key, inc[j + 1], inc[j]) end
        local n = redis.call('ZCARD', key)
        if n > trim_at then redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1) end
        redis.call('PEXPIRE', key, m.covis_ttl)
      else
        redis.call('ZADD', key, 'GT', inc, m.clock_member)
        redis.call('PEXPIRE', key, m.pop_ttl)
      end
    end
  end
end
return 1
"""
)

# KEYS: the user's features and data key (declared for routing; the script reads the names from ARGV, laid
# out as for `stores.redis._READ`). Returns {features or false, wrapped key or false, seed, ...}.
_READ_USER = _READ_SEEDS + "\nreturn {blob, wrapped, unpack(seeds)}\n"

# K: co-visitation keys; A[1]: neighbours per key. Returns {key index, {member, score, ...}, ties or
# false, ...} for the keys that exist (ties as in `stores.redis._READ`).
_READ_NEIGHBOURS = _cross_slot_lua(
    """local per_seed = tonumber(A[1])
"""
    + TOP_NEIGHBOURS
    + """
local out = {}
for i, key in ipairs(K) do
  local top, ties = top_neighbours(key, per_seed)
  if #top > 0 then
    out[#out + 1] = i
    out[#out + 1] = top
    out[#out + 1] = ties
  end
end
return out
""",
    writes=False,
)


# K: string keys of one node. Returns their values (false for a missing key), in order.
_GET_MANY_BODY = _cross_slot_lua(
    """local out = {}
for i, key in ipairs(K) do out[i] = redis.call('GET', key) end
return out
""",
    writes=False,
    own_args=False,
)

# K: string keys of one node; A: a value for each. SET NX each, then returns the value each key has now.
_CREATE_MANY_BODY = _cross_slot_lua(
    """local out = {}
for i, key in ipairs(K) do
  redis.call('SET', key, ARGV[nk + 1 + i], 'NX')
  out[i] = redis.call('GET', key)
end
return out
""",
    own_args=False,
)


@contextmanager
def cluster_reachable(what: str) -> Iterator[None]:
    """As `stores.redis.reachable`, plus what a Cluster says while it is changing (down, moved, try again)."""
    try:
        with reachable(what):
            yield
    except (ClusterDownError, ClusterError, TryAgainError, RedisClusterException) as exc:
        raise StoreUnavailable(f"Redis Cluster is unavailable ({what}): {exc}") from exc
    except ResponseError as exc:
        if str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            raise StoreUnavailable(f"Redis Cluster is changing ({what}): {exc}") from exc
        raise


@dataclass(frozen=True, slots=True)
class _Script:
    """A script and how its key names travel.

    A node routes a script call by its declared keys, which must share a slot, even for a script flagged
    `allow-cross-slot-keys`; such a script may then touch keys of any slot the node holds, named in ARGV.
    So a `cross_slot` script gets the first key name as KEYS[1] and the others first in ARGV, after their
    count (its prologue, `_cross_slot_lua`'s, rebuilds them as `K`, its own arguments as `A`).
    """

    body: str
    cross_slot: bool = False

    @property
    def sha(self) -> str:
        return sha1(self.body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    """One node's share of a committed batch's item increments, as stored in its outbox."""

    outbox_slot: int
    id: str
    #: JSON: {"pop": [item, w, ...], "trend": [[day, [item, w, ...]], ...], "covis": [[item, [other, n, ...]],
    #: ...], "clock": ms}.
    blob: str


class NodeScripts:
    """Scripts (and reads) run per node of a Redis Cluster: the Cluster store's and the Cluster key store's."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._ready = False

    async def ready(self) -> None:
        """Read the slot map once (what `node_of` answers from)."""
        if not self._ready:
            with cluster_reachable("reading the slot map"):
                await self.client.initialize()
            self._ready = True

    def node_of(self, slot: int) -> ClusterNode:
        """The primary serving `slot` now."""
        return self.client.nodes_manager.get_node_from_slot(slot)

    def by_node(self, names: Sequence[str]) -> list[tuple[ClusterNode, list[int]]]:
        """The positions in `names` of the keys each node holds."""
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i, name in enumerate(names):
            node = self.node_of(keys.slot(name))
            groups.setdefault(node.name, (node, []))[1].append(i)
        return list(groups.values())

    async def eval(
        self, node: ClusterNode, script: _Script, keys_: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA on `node` (loading the script there first when it does not know it)."""
        if script.cross_slot:
            command: tuple[Any, ...] = ("EVALSHA", script.sha, 1, keys_[0], len(keys_) - 1, *keys_[1:], *args)
        else:
            command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
        try:
            return await self.client.execute_command(*command, target_nodes=node)
        except (NoScriptError, ClusterCrossSlotError):
            # A node reads a script's flags (`allow-cross-slot-keys`) from the script it knows by that sha: for
            # one it does not know yet, it refuses keys of several slots before saying NOSCRIPT.
            await self.client.execute_command("SCRIPT LOAD", script.body, target_nodes=node)
            return await self.client.execute_command(*command, target_nodes=node)

    async def per_node(self, script: _Script, names: Sequence[str], values: Sequence[Any] = ()) -> list[Any]:
        """`script` once per node over the keys it holds (with the `values` at their positions, when given),
        the nodes in parallel; the replies' elements put back in the order of `names`."""
        await self.ready()
        groups = self.by_node(names)
        replies = await asyncio.gather(
            *(
                self.eval(
                    node,
                    script,
                    [names[i] for i in positions],
                    [values[i] for i in positions] if values else [],
                )
                for node, positions in groups
            )
        )
        out: list[Any] = [None] * len(names)
        for (_, positions), reply in zip(groups, replies, strict=True):
            for i, value in zip(positions, reply, strict=True):
                out[i] = value
        return out

    async def get_many(self, names: Sequence[str]) -> list[Any]:
        """GET of every key (None when missing): one script per node instead of an MGET per slot (the keys of
        a batch's users are spread over about as many slots as there are users)."""
        return await self.per_node(GET_MANY, names)

    async def create_many(self, names: Sequence[str], values: Sequence[bytes]) -> list[Any]:
        """SET NX of every key, then its value now (another process may have been first): one script per node."""
        return await self.per_node(CREATE_MANY, names, values)


def is_cluster(url: str, wait_s: float = 30.0) -> bool:
    """Whether the Redis at `url` is a node of a Redis Cluster (`INFO cluster`): one blocking round trip, tried
    again for `wait_s` while Redis cannot be reached (a worker started with Redis is restarting), then
    `StoreUnavailable`."""
    deadline = time.monotonic() + wait_s
    backoff = 0.1
    while True:
        try:
            with redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0) as client:
                info = cast(dict[str, Any], client.info("cluster"))
            return bool(info.get("cluster_enabled"))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if time.monotonic() + backoff > deadline:
                raise StoreUnavailable(
                    f"Redis is unavailable (connecting to {url.split('@')[-1]}): {exc}"
                ) from exc
            log.warning("Redis is unavailable (%s); retrying in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def redis_store_from_url(
    url: str, config: FoldConfig = FoldConfig(), policy: keys.KeyPolicy = keys.KeyPolicy()
) -> RedisFeatureStore:
    """The Redis store for `url`: the Cluster one when `url` names a Cluster node, else the single-Redis one.

    Called once at a process's start (it asks the server, blocking for one round trip).
    """
    if is_cluster(url):
        return RedisClusterFeatureStore.from_url(url, config, policy)
    return RedisFeatureStore.from_url(url, config, policy)


class RedisClusterFeatureStore(RedisFeatureStore):
    """Features on a Redis Cluster; see the module docstring. One writer per user, any number of readers."""

    client: RedisCluster  # type: ignore[assignment]

    def __init__(
        self,
        client: RedisCluster,
        config: FoldConfig = FoldConfig(),
        policy: keys.KeyPolicy = keys.KeyPolicy(),
    ) -> None:
        super().__init__(client, config, policy)  # type: ignore[arg-type]
        self.nodes = NodeScripts(client)
        self.delta_group = self._node_of_user
        #: Entries written to outboxes (step 1) and not yet applied and deleted (steps 2 and 3).
        self._pending: list[_Entry] = []
        #: Entries whose step-1 script failed: written if the script ran before the connection broke.
        self._unsure: list[_Entry] = []

    @classmethod
    def from_url(
        cls, url: str, config: FoldConfig = FoldConfig(), policy: keys.KeyPolicy = keys.KeyPolicy()
    ) -> RedisClusterFeatureStore:
        """A store on a Cluster client that finds every node from the one `url` names."""
        client = RedisCluster.from_url(
            url, max_connections=MAX_CONNECTIONS, socket_connect_timeout=2.0, socket_timeout=30.0
        )
        return cls(client, config, policy)

    async def _initialize(self) -> None:
        await self.nodes.ready()

    def _node_of_slot(self, slot: int) -> ClusterNode:
        return self.nodes.node_of(slot)

    def _node_of_user(self, user_id: str) -> str:
        return str(self._node_of_slot(keys.slot(keys.user(user_id))).name)

    async def _eval(
        self, node: ClusterNode, script: _Script, keys_: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return await self.nodes.eval(node, script, keys_, args)

    # -- writer side -------------------------------------------------------------------------------
    async def _get_many(self, names: list[str]) -> list[Any]:
        with cluster_reachable("loading users"):
            return await self.nodes.get_many(names)

    async def load_users(self, user_ids: Collection[str]) -> dict[str, UserState]:
        with cluster_reachable("loading users"):
            return await super().load_users(user_ids)

    async def commit(self, users: Mapping[str, UserState], deltas: ItemDeltas) -> None:
        """Write the users with their increments as outbox entries, per node; then apply and delete the
        entries (see the module docstring). Everything is read from `users` and `deltas` before the first
        await."""
        by_group: dict[str, list[str]] = {}
        group = self._node_of_user
        folded_in = deltas.group_of
        for user_id in users:
            name = group(user_id)
            if folded_in.get(user_id, name) != name:
                # Its slot moved to another node since the fold (failover, resharding): its increments were
                # grouped with another node's users. Nothing is written; the worker folds the batch again.
                raise StoreUnavailable(
                    "users of the batch moved to another Redis Cluster node since it was folded"
                )
            by_group.setdefault(name, []).append(user_id)
        batch = uuid.uuid4().hex[:16]
        calls = [
            self._users_call(batch, name, ids, users, deltas.groups.get(name))
            for name, ids in by_group.items()
        ]
        await self._initialize()
        await self._settle_unsure()
        results = await asyncio.gather(*(self._write_users(*call) for call in calls), return_exceptions=True)
        for call, result in zip(calls, results, strict=True):
            entry = call[3]
            if entry is not None:
                # A script whose reply was lost may still have run: its entry is looked for next time.
                (self._pending if result is None else self._unsure).append(entry)
        await self._drain()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def _settle_unsure(self) -> None:
        """Entries of failed step-1 scripts that ran after all (the reply was lost) become pending."""
        if not self._unsure:
            return
        unsure = self._unsure
        with cluster_reachable("looking for outbox entries"):
            pipe = self.client.pipeline(transaction=False)
            for entry in unsure:
                pipe.hexists(keys.outbox(entry.outbox_slot), entry.id)
            found = await pipe.execute()
        self._unsure = []
        self._pending += [entry for entry, there in zip(unsure, found, strict=True) if there]

    def _users_call(
        self,
        batch: str,
        group: str,
        user_ids: list[str],
        users: Mapping[str, UserState],
        part: ItemDeltas | None,
    ) -> tuple[str, list[str], list[Any], _Entry | None]:
        """The keys and arguments of one node's step-1 script, serialized now (see `commit`)."""
        vault = self.vault
        outbox_slot = keys.slot(keys.user(user_ids[0]))
        entry = None
        blob = ""
        if part:
            blob = _deltas_blob(part)
            entry = _Entry(outbox_slot, f"{batch}.{outbox_slot}", blob)
        meta = {
            "stride": 2 if vault is None else 3,
            "user_ttl": str(self.policy.user_ttl_ms),
            "applied_ttl": str(self.policy.applied_ttl_ms),
            "entry": entry.id if entry else "",
        }
        names = [keys.outbox(outbox_slot)]
        args: list[Any] = [json.dumps(meta, separators=(",", ":")), blob]
        for user_id in user_ids:
            state = users[user_id]
            if vault is None:
                names += (keys.user(user_id), keys.applied(user_id))
                args += (state.to_bytes(), state.applied_to_bytes())
            else:
                key = vault.cached(user_id)
                if key is None:
                    raise StoreUnavailable(
                        f"the data key of a user in the batch left the cache; raise "
                        f"AISLE_KEY_CACHE_SIZE above {vault.cache_size}"
                    )
                names += (keys.user(user_id), keys.applied(user_id), keys.data_key(user_id))
                args += (
                    seal(key.aead, user_id, FEATURES, state.to_bytes()),
                    state.applied_to_bytes(),
                    key.wrapped,
                )
        return group, names, args, entry

    async def _write_users(self, group: str, names: list[str], args: list[Any], entry: _Entry | None) -> None:
        node = self._node_of_slot(keys.slot(names[0]))
        if node.name != group:
            raise StoreUnavailable(
                "users of the batch moved to another Redis Cluster node since it was folded"
            )
        with cluster_reachable("committing a batch's users"):
            await self._eval(node, _USERS, names, args)

    async def _drain(self) -> None:
        """Steps 2 and 3 for the pending entries: apply them where not yet applied, then delete them."""
        pending = self._pending
        if not pending:
            return
        entries = list(pending)
        with cluster_reachable("applying a batch's item increments"):
            await self._apply(entries)
            pipe = self.client.pipeline(transaction=False)
            for entry in entries:
                pipe.hdel(keys.outbox(entry.outbox_slot), entry.id)
            await pipe.execute()
        done = {id(e) for e in entries}
        self._pending = [e for e in pending if id(e) not in done]

    async def _apply(self, entries: Sequence[_Entry]) -> None:
        """Step 2: one script per node holding item keys of the entries, in parallel."""
        policy = self.policy
        per_node: dict[str, tuple[ClusterNode, list[str], dict[str, int], list[list[Any]]]] = {}
        for entry in entries:
            rows_by_node: dict[str, list[tuple[int, str, str, Any]]] = {}
            for slot, kind, key, inc in _rows(entry.blob):
                node = self._node_of_slot(slot)
                rows_by_node.setdefault(node.name, []).append((slot, kind, key, inc))
            for name, rows in rows_by_node.items():
                node = self._node_of_slot(rows[0][0])
                _, names, index, out = per_node.setdefault(name, (node, [], {}, []))
                names.append(keys.marker(entry.id, min(row[0] for row in rows)))
                e: list[Any] = [len(names)]
                for _, kind, key, inc in rows:
                    if key not in index:
                        names.append(key)
                        index[key] = len(names)
                    e.append([kind, index[key], inc])
                out.append(e)
        meta_base = {
            "pop_ttl": str(policy.pop_ttl_ms),
            "trend_ttl": str(policy.trend_ttl_ms),
            "covis_ttl": str(policy.covis_ttl_ms),
            "covis_cap": policy.covis_cap,
            "covis_trim": covis_trim_at(policy.covis_cap),
            "marker_ttl": str(policy.marker_ttl_ms),
            "clock_member": keys.CLOCK_MEMBER,
        }
        calls = []
        for node, names, _, out in per_node.values():
            meta = dict(meta_base, entries=out)
            calls.append(
                self._eval(node, _ITEMS, names, [json.dumps(meta, ensure_ascii=False, separators=(",", ":"))])
            )
        await asyncio.gather(*calls)

    async def recover(self) -> None:
        """Apply and delete the outbox entries a writer left behind (a worker killed between the steps).

        Reads every slot's outbox (16,384 HGETALLs, pipelined per node). Safe while other workers commit:
        an entry is applied once per node whoever applies it.
        """
        await self._initialize()
        with cluster_reachable("reading the outboxes"):
            pipe = self.client.pipeline(transaction=False)
            for slot in range(len(keys._slot_tags())):
                pipe.hgetall(keys.outbox(slot))
            outboxes = await pipe.execute()
        found = [
            _Entry(slot, field.decode(), value.decode())
            for slot, outbox in enumerate(outboxes)
            for field, value in cast(dict[bytes, bytes], outbox).items()
        ]
        if found:
            log.info("applying %d outbox entries left by an interrupted commit", len(found))
            self._pending += found
            await self._drain()

    # -- reader side -------------------------------------------------------------------------------
    async def read_request(self, user_id: str, context_item_ids: Sequence[str]) -> RequestFeatures:
        """The user (one script on their slot), then the seeds' neighbours (one script per node)."""
        await self._initialize()
        context = list(dict.fromkeys(context_item_ids))
        user: UserState | None = None
        seeds = context
        if user_id:
            vault = self.vault
            user_key, data_key = keys.user(user_id), (keys.data_key(user_id) if vault is not None else "")
            args: list[str | int] = [
                user_key,
                data_key,
                keys.COVIS_PREFIX,
                RECENT_SEEDS,
                NEIGHBOURS_PER_SEED,
                *context,
            ]
            with cluster_reachable("reading a request's features"):
                out = await self._eval(
                    self._node_of_slot(keys.slot(user_key)),
                    _USER,
                    [k for k in (user_key, data_key) if k],
                    args,
                )
            blob, wrapped = out[0], out[1]
            if blob and not is_sealed(blob):
                user = UserState.from_bytes(blob)
                seeds = [decoded(s) for s in out[2:]]
            elif blob and vault is not None and wrapped:
                try:
                    user = UserState.from_bytes(
                        open_sealed(vault.cipher(user_id, wrapped), user_id, FEATURES, blob)
                    )
                except Unreadable:
                    log.warning("features of a user could not be opened with their key; read as unknown")
                if user is not None:
                    seeds = recent_seeds(user, context)
        covis = await self._neighbours_of(seeds)
        return RequestFeatures(user=user, covis={item: covis[item] for item in seeds if item in covis})

    async def _neighbours_of(self, seeds: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        by_node: dict[str, tuple[ClusterNode, list[str]]] = {}
        for item in seeds:
            slot = keys.slot(keys.covis(item))
            node = self._node_of_slot(slot)
            by_node.setdefault(node.name, (node, []))[1].append(item)
        if not by_node:
            return {}
        with cluster_reachable("reading co-visitation"):
            replies = await asyncio.gather(
                *(
                    self._eval(node, _NEIGHBOURS, [keys.covis(i) for i in items], [NEIGHBOURS_PER_SEED])
                    for node, items in by_node.values()
                )
            )
        covis: dict[str, list[tuple[str, float]]] = {}
        for (_, items), reply in zip(by_node.values(), replies, strict=True):
            triples: list[Any] = [None, None]
            for i in range(0, len(reply), 3):
                triples += (items[int(reply[i]) - 1], reply[i + 1], reply[i + 2])
            covis.update(self._lists.decode(triples))
        return covis

    async def item_stats(self) -> ItemStats:
        await self._initialize()
        with cluster_reachable("reading item stats"):
            return await super().item_stats()

    async def delete_user(self, user_id: str) -> bool:
        await self._initialize()
        with cluster_reachable("deleting a user"):
            return await super().delete_user(user_id)

    async def close(self) -> None:
        await self.client.aclose()


_USERS = _Script(_COMMIT_USERS, cross_slot=True)
_ITEMS = _Script(_APPLY_ITEMS, cross_slot=True)
_USER = _Script(_READ_USER)
_NEIGHBOURS = _Script(_READ_NEIGHBOURS, cross_slot=True)
GET_MANY = _Script(_GET_MANY_BODY, cross_slot=True)
CREATE_MANY = _Script(_CREATE_MANY_BODY, cross_slot=True)


def _deltas_blob(part: ItemDeltas) -> str:
    """One node's share of a batch's increments, grouped by Redis key in first-touched order."""
    trend: dict[int, list[Any]] = {}
    for (item, day), weight in part.trend.items():
        trend.setdefault(day, []).extend((item, weight))
    covis: dict[str, list[Any]] = {}
    for (item, other), count in part.covis.items():
        covis.setdefault(item, []).extend((other, count))
    return json.dumps(
        {
            "pop": list(chain.from_iterable(part.popularity.items())),
            "trend": [[day, inc] for day, inc in trend.items()],
            "covis": [[item, inc] for item, inc in covis.items()],
            "clock": part.clock_ms,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _rows(blob: str) -> Iterator[tuple[int, str, str, Any]]:
    """An entry's increments as (slot, kind, key, increments) rows; see `_APPLY_ITEMS` for the kinds."""
    d = json.loads(blob)
    if d["pop"]:
        yield keys.slot(keys.POPULARITY), "p", keys.POPULARITY, d["pop"]
    for day, inc in d["trend"]:
        key = keys.trend(day)
        yield keys.slot(key), "t", key, inc
    for item, inc in d["covis"]:
        key = keys.covis(item)
        yield keys.slot(key), "c", key, inc
    if d["clock"]:
        yield keys.slot(keys.CLOCK), "k", keys.CLOCK, str(d["clock"])
