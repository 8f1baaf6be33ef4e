"""The customer profile: a user's stored features read as of the stream clock."""

from __future__ import annotations

import math

from feature_worker.decay import DAY_MS, scale_at
from feature_worker.fold import FoldConfig
from feature_worker.state import UserState
from protos.aisle.v1 import events_pb2, users_pb2

TOP_AFFINITIES = 10
#: Loyalty: recency halves every 30 days; frequency and spend saturate around 5 orders and 250 units.
RECENCY_HALF_LIFE_DAYS = 30.0
FREQUENCY_SCALE = 5.0
MONETARY_SCALE = 250.0


def loyalty_score(state: UserState, now_ms: int) -> float:
    """Recency-frequency-monetary score in [0, 1]: the mean of three saturating parts."""
    if state.purchase_count == 0:
        return 0.0
    days = max(0.0, (now_ms - state.last_purchase_ms) / DAY_MS)
    recency: float = 0.5 ** (days / RECENCY_HALF_LIFE_DAYS)  # float ** float is typed Any (it may be complex)
    frequency = 1.0 - math.exp(-state.purchase_count / FREQUENCY_SCALE)
    monetary = 1.0 - math.exp(-max(0.0, state.monetary) / MONETARY_SCALE)
    return (recency + frequency + monetary) / 3.0


def build_profile(
    user_id: str,
    state: UserState | None,
    user: users_pb2.User | None,
    now_ms: int,
    config: FoldConfig = FoldConfig(),
) -> users_pb2.Profile:
    """Assemble `aisle.v1.Profile`; decayed values are read at `now_ms`."""
    profile = users_pb2.Profile(user_id=user_id, as_of_ms=now_ms, known=state is not None or user is not None)
    if user is not None:
        profile.user.CopyFrom(user)
    if state is None:
        return profile
    scale = scale_at(now_ms, config.half_life_ms)
    profile.recent.extend(
        users_pb2.Interaction(type=events_pb2.EventType.ValueType(etype), item_id=item, ts_ms=ts)
        for ts, etype, item in reversed(state.recent)
    )
    profile.cart_item_ids.extend(state.cart_items())
    profile.purchased_item_ids.extend(
        item for item, _ in sorted(state.purchases.items(), key=lambda kv: -kv[1][0])
    )
    for target, weights in (
        (profile.category_affinities, state.category_affinity),
        (profile.brand_affinities, state.brand_affinity),
    ):
        top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_AFFINITIES]
        target.extend(users_pb2.Affinity(key=key, weight=w * scale) for key, w in top)
    profile.engagement = state.engagement * scale
    profile.loyalty.CopyFrom(
        users_pb2.Loyalty(
            last_purchase_ms=state.last_purchase_ms,
            purchases=state.purchase_count,
            monetary=state.monetary,
            score=loyalty_score(state, now_ms),
        )
    )
    profile.events_applied = state.events_applied
    return profile
