"""One user's real-time features in memory, and their stored (protobuf) form.

Every collection is capped (see `FoldConfig`) so a user's features stay bounded whatever they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protos.aisle.v1 import features_pb2


@dataclass(slots=True)
class UserState:
    """The features of one user, as the fold keeps them.

    `recent` is sorted by timestamp (oldest first); ties keep arrival order. Affinities and engagement
    are decayed sums in the encoding of `feature_worker.decay`.
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
    applied_ids: dict[str, None] = field(default_factory=dict)  # an ordered set, oldest first
    last_seen_ms: int = 0

    def cart_items(self) -> list[str]:
        """Items in the cart now, most recently added first."""
        lines = [(ts, item) for item, (ts, in_cart) in self.cart.items() if in_cart]
        return [item for _, item in sorted(lines, reverse=True)]

    def to_bytes(self) -> bytes:
        """Serialize to the stored form (`aisle.v1.UserFeatures`)."""
        msg = features_pb2.UserFeatures(
            category_affinity=self.category_affinity,
            brand_affinity=self.brand_affinity,
            engagement=self.engagement,
            last_purchase_ms=self.last_purchase_ms,
            purchase_count=self.purchase_count,
            monetary=self.monetary,
            events_applied=self.events_applied,
            applied_ids=list(self.applied_ids),
            last_seen_ms=self.last_seen_ms,
        )
        msg.recent.extend(
            features_pb2.StoredInteraction(ts_ms=ts, type=etype, item_id=item) for ts, etype, item in self.recent
        )
        msg.cart.extend(
            features_pb2.StoredCartLine(item_id=item, ts_ms=ts, in_cart=in_cart)
            for item, (ts, in_cart) in self.cart.items()
        )
        msg.purchases.extend(
            features_pb2.StoredPurchase(item_id=item, last_ts_ms=ts, count=count)
            for item, (ts, count) in self.purchases.items()
        )
        return msg.SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Parse the stored form written by `to_bytes`."""
        msg = features_pb2.UserFeatures.FromString(data)
        return cls(
            recent=[(r.ts_ms, r.type, r.item_id) for r in msg.recent],
            cart={c.item_id: (c.ts_ms, c.in_cart) for c in msg.cart},
            purchases={p.item_id: (p.last_ts_ms, p.count) for p in msg.purchases},
            category_affinity=dict(msg.category_affinity),
            brand_affinity=dict(msg.brand_affinity),
            engagement=msg.engagement,
            last_purchase_ms=msg.last_purchase_ms,
            purchase_count=msg.purchase_count,
            monetary=msg.monetary,
            events_applied=msg.events_applied,
            applied_ids=dict.fromkeys(msg.applied_ids),
            last_seen_ms=msg.last_seen_ms,
        )
