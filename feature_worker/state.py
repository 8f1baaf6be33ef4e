"""One user's real-time features in memory, and their stored (protobuf) form.

Every collection is capped (see `FoldConfig`) so a user's features stay bounded whatever they do.
The stored form is compact because there is one per customer and a million customers must fit in a
few hundred megabytes of Redis (see `feature_worker.keys`): `to_bytes` writes `aisle.v1.UserFeatures`
(the layout is described in `features.proto`), and the applied event ids go apart
(`applied_to_bytes`), since they are kept for a shorter time.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from protos.aisle.v1 import features_pb2

_UserFeatures = features_pb2.UserFeatures


@dataclass(slots=True)
class UserState:
    """The features of one user, as the fold keeps them.

    `recent` is sorted by timestamp (oldest first); ties keep arrival order. Affinities and engagement
    are decayed sums in the encoding of `feature_worker.decay`. `applied_ids` holds 64-bit hashes of
    applied event ids (`fold.event_key`), oldest first.
    """

    recent: list[tuple[int, int, str]] = field(default_factory=list)  # (ts_ms, EventType, item_id)
    cart: dict[str, tuple[int, bool]] = field(default_factory=dict)  # item -> (ts_ms of last change, in cart)
    purchases: dict[str, tuple[int, int]] = field(default_factory=dict)  # item -> (last ts_ms, count)
    category_affinity: dict[str, float] = field(default_factory=dict)
    brand_affinity: dict[str, float] = field(default_factory=dict)
    engagement: float = 0.0
    last_purchase_ms: int = 0
    purchase_count: int = 0
    monetary: float = 0.0
    events_applied: int = 0
    applied_ids: dict[int, None] = field(default_factory=dict)  # an ordered set of event-id hashes
    last_seen_ms: int = 0

    def cart_items(self) -> list[str]:
        """Items in the cart now, most recently added first."""
        lines = [(ts, item) for item, (ts, in_cart) in self.cart.items() if in_cart]
        return [item for _, item in sorted(lines, reverse=True)]

    def to_bytes(self) -> bytes:
        """The features (everything but `applied_ids`) in their stored form; deterministic.

        Exact for states the fold made (decayed sums at 24 significant bits); any other state is still
        stored exactly, with 8-byte weights.
        """
        # Written for speed (one message constructor call, no per-field extends): it runs for every
        # user of every batch. `index` numbers the items in the order they are first named.
        fields: dict[str, Any] = {"events_applied": self.events_applied}
        index: dict[str, int] = {}
        recent = self.recent
        seen = self.last_seen_ms
        if recent:
            previous = 0
            deltas = []
            positions = []
            types = []
            for ts, etype, item in recent:
                deltas.append(ts - previous)
                previous = ts
                position = index.get(item)
                if position is None:
                    position = index[item] = len(index)
                positions.append(position)
                types.append(etype)
            fields["recent_item"] = positions
            fields["recent_ts"] = deltas
            fields["recent_types"] = bytes(types)
            fields["last_seen"] = seen - previous
        else:
            fields["last_seen"] = seen
        cart = self.cart
        if cart:
            fields["cart_item"] = [index.setdefault(item, len(index)) for item in cart]
            fields["cart_ts"] = [seen - ts for ts, _ in cart.values()]
            fields["cart_in"] = bytes([in_cart for _, in_cart in cart.values()])
        purchases = self.purchases
        if purchases:
            fields["purchase_item"] = [index.setdefault(item, len(index)) for item in purchases]
            fields["purchase_ts"] = [seen - ts for ts, _ in purchases.values()]
            fields["purchase_counts"] = [count for _, count in purchases.values()]
        if self.purchase_count:
            fields["purchase_count"] = self.purchase_count
            fields["last_purchase_ago"] = seen - self.last_purchase_ms
        if self.monetary:
            fields["monetary"] = self.monetary
        if index:
            fields["items"] = "\0".join(index).encode()
        weights: list[float] = []
        affinity = self.category_affinity
        if affinity:
            previous_key = ""
            previous_weight = None
            suffixes, shared = [], []
            for key in sorted(affinity):
                # The usual case first: a category, then its sub-category.
                n = len(previous_key) if key.startswith(previous_key) else _common_prefix(previous_key, key)
                weight = affinity[key]
                suffixes.append(key[n:])
                if weight == previous_weight:
                    shared.append(n * 2 + 1)
                else:
                    shared.append(n * 2)
                    weights.append(weight)
                previous_key, previous_weight = key, weight
            fields["category_suffix"] = suffixes
            fields["category_shared"] = shared
        if self.brand_affinity:
            brand_affinity = self.brand_affinity
            brands = sorted(brand_affinity)
            fields["brand_keys"] = "\0".join(brands).encode()
            weights += [brand_affinity[b] for b in brands]
        weights.append(self.engagement)
        exponent = math.frexp(max(weights))[1]
        packed = _pack_f32(weights, exponent)
        if packed is not None:
            fields["weights"] = packed
            fields["weight_exp"] = exponent
        else:
            fields["weights64"] = weights
        return _UserFeatures(**fields).SerializeToString(deterministic=True)

    def applied_to_bytes(self) -> bytes:
        """The applied event ids in their stored form: 8-byte little-endian hashes, oldest first."""
        return struct.pack(f"<{len(self.applied_ids)}Q", *self.applied_ids)

    @classmethod
    def from_bytes(cls, data: bytes, applied: bytes = b"") -> UserState:
        """Parse the stored forms written by `to_bytes` and `applied_to_bytes`."""
        msg = _UserFeatures.FromString(data)
        # Interned, as the fold's ids are: the serving path's dict lookups of them then match by identity.
        items = list(map(intern, msg.items.decode().split("\0"))) if msg.items else []
        recent: list[tuple[int, int, str]] = []
        ts = 0
        if msg.recent_item:
            for delta, etype, position in zip(msg.recent_ts, msg.recent_types, msg.recent_item):
                ts += delta
                recent.append((ts, etype, items[position]))
        seen = ts + msg.last_seen
        cart = {
            items[position]: (seen - ago, bool(in_cart))
            for position, ago, in_cart in zip(msg.cart_item, msg.cart_ts, msg.cart_in)
        }
        purchases = {
            items[position]: (seen - ago, count)
            for position, ago, count in zip(msg.purchase_item, msg.purchase_ts, msg.purchase_counts)
        }
        if msg.weights:
            scale = math.ldexp(1.0, msg.weight_exp)
            weights = [w * scale for w in struct.unpack(f"<{len(msg.weights) // 4}f", msg.weights)]
        else:
            weights = list(msg.weights64)
        position = 0
        categories: dict[str, float] = {}
        if msg.category_suffix:
            key = ""
            weight = 0.0
            for suffix, shared in zip(msg.category_suffix, msg.category_shared):
                key = key[: shared >> 1] + suffix
                if not shared & 1:
                    weight = weights[position]
                    position += 1
                categories[key] = weight
        brands: dict[str, float] = {}
        if msg.brand_keys:
            for brand in msg.brand_keys.decode().split("\0"):
                brands[brand] = weights[position]
                position += 1
        return cls(
            recent=recent,
            cart=cart,
            purchases=purchases,
            category_affinity=categories,
            brand_affinity=brands,
            engagement=weights[position] if position < len(weights) else 0.0,
            last_purchase_ms=seen - msg.last_purchase_ago if msg.purchase_count else 0,
            purchase_count=msg.purchase_count,
            monetary=msg.monetary,
            events_applied=msg.events_applied,
            applied_ids=dict.fromkeys(struct.unpack(f"<{len(applied) // 8}Q", applied)) if applied else {},
            last_seen_ms=seen,
        )


def _pack_f32(weights: list[float], exponent: int) -> bytes | None:
    """`weights` times 2**-exponent as float32, or None unless every one comes back exactly."""
    scale = math.ldexp(1.0, -exponent)
    scaled = [w * scale for w in weights]
    fmt = f"<{len(scaled)}f"
    try:
        packed = struct.pack(fmt, *scaled)
    except OverflowError:
        return None
    if struct.unpack(fmt, packed) != tuple(scaled):
        return None
    return packed


def _common_prefix(a: str, b: str) -> int:
    if b.startswith(a):  # the usual case: a category, then its sub-category
        return len(a)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
