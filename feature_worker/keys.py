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

Redis Cluster: the three keys of a user carry the user id as their hash tag (`{<user>}`), so one user's
keys share a slot and a user's write is atomic on any deployment. What needs a single Redis is the
batch: the worker's commit script writes the users and the item keys of a whole batch at once, and the
recommend script reads the user's key and then the co-visitation keys of the user's recent items,
which live in other slots. On a Cluster, both split by node: the commit becomes one script per node
(a batch is then atomic per node, which is still safe, since user and applied ids stay together and
item increments are only made for events whose user write commits in the same script — group each
event's item increments with its user's node) and Recommend reads the user, then the neighbours (two
round trips). This module already names keys so that this works; the scripts assume one Redis.

Memory: see `loadtest/redis_memory.py` and BENCHMARKS.md for the measured bytes per user.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_worker.decay import DAY_MS

VERSION = 1

#: Prefixes that code completes with an id (Lua builds `COVIS_PREFIX .. item`).
USER_PREFIX = f"u{VERSION}"
APPLIED_PREFIX = f"d{VERSION}"
COVIS_PREFIX = f"c{VERSION}:"
TREND_PREFIX = f"t{VERSION}:"
POPULARITY = f"p{VERSION}"
CLOCK = f"k{VERSION}"
DATA_KEY_PREFIX = f"x{VERSION}"
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
    covis_cap: int = 200
