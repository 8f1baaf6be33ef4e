"""The Redis layout of Aisle's features, version 1: the only place where key names are spelled.

Written by the feature worker (`stores.redis.RedisFeatureStore.commit`), read by the server. A change
of the layout, of the stored form (`features.proto`) or of the fold's caps (`FoldConfig`) is a new
`VERSION`: keys of two versions never mix, and a new version starts empty (replay the event topic
into it with a fresh consumer group, then switch the servers over).

Keys (version 1; every name starts with a one-letter type and the version, and names are short on
purpose: a key's name is stored once per user, and 16 bytes or less keeps it in the smallest allocation):

| key                | type   | holds                                                     | bounded by / TTL                   |
|--------------------|--------|-----------------------------------------------------------|------------------------------------|
| `u1{<user>}`       | string | the user's features, `UserState.to_bytes()`               | fold caps / `user_ttl`             |
| `d1{<user>}`       | string | the user's applied event-id hashes (idempotency)          | `applied_ids_cap` / `applied_ttl`  |
| `c1:<item>`        | zset   | co-visited neighbour -> count                             | `covis_cap` / `covis_ttl`          |
| `p1`               | hash   | item -> decayed popularity (`decay` encoding)             | items seen / `pop_ttl`             |
| `t1:<UTC day>`     | hash   | item -> interest that day (trending)                      | items seen / `trend_ttl`           |
| `k1`               | zset   | one member, `c`: the stream clock (newest event time, ms) | one entry / `pop_ttl`              |
| `x1{<user>}`       | string | the user's data key, wrapped by the master key            | one per user / none (see below)    |

With encryption on (`feature_worker.privacy`), `u1{<user>}` holds the features sealed with the user's data
key (AES-256-GCM), and `x1{<user>}` that key, wrapped. Data keys have no TTL: a key that expired while the
event topic still held the user's sealed events would shred them silently; an erasure deletes it.

Every TTL is refreshed by each write, so a key lives while it is used and goes some time after. A user
silent for `user_ttl` is forgotten; duplicates are recognised for `applied_ttl` after a user's last
event (the redelivery window of a crash is seconds, a client's retry window minutes).

Redis Cluster (`stores.redis_cluster`): the three keys of a user carry the user id as their hash tag
(`{<user>}`), so one user's keys share a slot. A batch's commit splits by node: one script per node writes
that node's users together with the item increments their events made, as an entry of the node's outbox
(`o1{<slot tag>}`, field = entry id); then one script per node applies each pending entry's increments to
the item keys it holds, once (a marker `m1:<entry>{<slot tag>}` on that node, set in the same script); then
the entries are deleted. A worker that dies between the steps leaves entries behind, and the next worker
(or the same one, at its next commit) applies them: every event's increments are made exactly once, with
the user write that recognises a redelivered event. A Recommend reads the user (one script on the user's
slot, which also finds the seed items), then the neighbours of the seeds (one script per node holding some,
in parallel): two round trips.

| key                | type   | holds                                                     | bounded by / TTL                   |
|--------------------|--------|-----------------------------------------------------------|------------------------------------|
| `o1{<slot tag>}`   | hash   | entry id -> a committed batch's item increments (Cluster) | deleted once applied / none        |
| `m1:<entry>{<tag>}`| string | an entry's increments were applied on this node (Cluster) | one per entry and node / `marker_ttl` |

A slot tag (`slot_tag`) is a short string that hashes to a given slot: it puts a key on a chosen slot.

Memory: see `loadtest/redis_memory.py` and BENCHMARKS.md for the measured bytes per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import count

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from feature_worker.decay import DAY_MS
from feature_worker.stores.bounds import COVIS_CAP

VERSION = 1

#: Prefixes that code completes with an id (Lua builds `COVIS_PREFIX .. item`).
USER_PREFIX = f"u{VERSION}"
APPLIED_PREFIX = f"d{VERSION}"
COVIS_PREFIX = f"c{VERSION}:"
TREND_PREFIX = f"t{VERSION}:"
POPULARITY = f"p{VERSION}"
CLOCK = f"k{VERSION}"
DATA_KEY_PREFIX = f"x{VERSION}"
OUTBOX_PREFIX = f"o{VERSION}"
MARKER_PREFIX = f"m{VERSION}:"
#: The one member of `CLOCK`.
CLOCK_MEMBER = "c"


def user(user_id: str) -> str:
    """The user's features: `u1{<user_id>}` (the user id is the hash tag)."""
    return f"{USER_PREFIX}{{{user_id}}}"


def applied(user_id: str) -> str:
    """The user's applied event-id hashes: `d1{<user_id>}` (same hash tag, so same slot, as `user`)."""
    return f"{APPLIED_PREFIX}{{{user_id}}}"


def data_key(user_id: str) -> str:
    """The user's wrapped data key: `x1{<user_id>}` (same hash tag, so same slot, as `user`)."""
    return f"{DATA_KEY_PREFIX}{{{user_id}}}"


def covis(item_id: str) -> str:
    return f"{COVIS_PREFIX}{item_id}"


def trend(day: int) -> str:
    """Trending interest of one UTC day (`ts_ms // DAY_MS`)."""
    return f"{TREND_PREFIX}{day}"


def outbox(slot: int) -> str:
    """The Cluster outbox of `slot`: `o1{<slot tag>}`."""
    return f"{OUTBOX_PREFIX}{{{slot_tag(slot)}}}"


def marker(entry: str, slot: int) -> str:
    """That outbox entry `entry` was applied on the node of `slot`: `m1:<entry>{<slot tag>}`."""
    return f"{MARKER_PREFIX}{entry}{{{slot_tag(slot)}}}"


def slot(key: str) -> int:
    """The Redis Cluster hash slot of a key name (its hash tag's, when it has one)."""
    return key_slot(key.encode())


def slot_tag(slot: int) -> str:
    """The first string of `0, 1, ..., z, 10, ...` (base 36) that hashes to `slot`."""
    return _slot_tags()[slot]


@cache
def _slot_tags() -> tuple[str, ...]:
    # About 170,000 CRC16s (every slot is hit after n ln n tries): a fraction of a second, once per process.
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    for n in count():
        tag = _base36(n)
        s = key_slot(tag.encode())
        if tags[s] is None:
            tags[s] = tag
            missing -= 1
            if not missing:
                return tuple(t for t in tags if t is not None)
    raise AssertionError("unreachable")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = digits[n % 36]
    while n >= 36:
        n //= 36
        out = digits[n % 36] + out
    return out


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """TTLs (milliseconds) and caps of the item-level keys: the bounds promised in the table above."""

    user_ttl_ms: int = 90 * DAY_MS
    applied_ttl_ms: int = 1 * DAY_MS
    covis_ttl_ms: int = 30 * DAY_MS
    pop_ttl_ms: int = 90 * DAY_MS
    #: Trending reads today and yesterday (stream time); a day's hash goes two days after its last write.
    trend_ttl_ms: int = 2 * DAY_MS
    #: Neighbours kept per item; the commit trims back to this when a set grows past 1.25 times it.
    covis_cap: int = COVIS_CAP
    #: How long a Cluster node remembers that an outbox entry was applied there: longer than any entry stays
    #: pending (a worker applies its entries at once; a crashed worker's, at the next worker's start).
    marker_ttl_ms: int = 7 * DAY_MS
