"""The generator's shapes and constants: the catalog, the users and the event rows as arrays, and the behaviour
constants every stage reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

from protos.aisle.v1 import events_pb2
from trainer.taxonomy import (
    Leaf,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_END_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_DAYS = 30
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# --- Behaviour constants -----------------------------------------------------------------------------------

FAVOURITE_LEAVES = 4  # leaves a user keeps coming back to
PREFERRED_BRANDS = 3
EXPLORE = 0.15  # chance that a session leaves the user's favourites for a leaf drawn by traffic
MAX_VIEWS = 12  # views per session
MEAN_EXTRA_VIEWS = 2.3  # views per session are 1 + Poisson(this), capped
# Sessions per user are 1 + Poisson(activity), with a lognormal activity of this mean.
MEAN_EXTRA_SESSIONS = 1.4
ACTIVITY_SIGMA = 1.1
BRAND_BOOST = math.log(4.0)  # a preferred brand's item is 4x as likely to be viewed
# Many sessions shop one brand of their leaf (the user's preferred one when it sells there): its items are
# FOCUS_BOOST times as likely. This is what makes "co-viewed with X" lean towards X's brand.
BRAND_FOCUS = 0.5
FOCUS_BOOST = math.log(6.0)
POPULARITY_EXPONENT = 0.9  # item popularity ~ rank ** -exponent
REMOVE = 0.15  # chance that a carted item is removed again
IN_STOCK = 0.95
# Median seconds before an event, by event type (the first event of a session has none); lognormal spread.
GAP_MEDIAN_S = {
    events_pb2.VIEW: 25.0,
    events_pb2.CLICK: 8.0,
    events_pb2.SEARCH: 5.0,
    events_pb2.ADD_TO_CART: 12.0,
    events_pb2.REMOVE_FROM_CART: 30.0,
    events_pb2.PURCHASE: 90.0,
}
ROWS_PER_BLOCK = 4_000_000  # bounds the memory of one block of the session x item weight matrix


@dataclass(frozen=True)
class CatalogArrays:
    leaves: list[Leaf]
    leaf_share: FloatArray  # per leaf: probability that an exploring session lands there
    item_leaf: IntArray
    item_brand: IntArray
    brand_names: list[str]
    price: FloatArray
    price_z: FloatArray  # log price standardized within the leaf
    log_pop: FloatArray
    in_stock: BoolArray
    items_by_leaf: list[IntArray]
    leaf_item_key: FloatArray  # items sorted by leaf, key = leaf + cumulative popularity share in the leaf
    leaf_item_order: IntArray


@dataclass(frozen=True)
class UserArrays:
    age: IntArray
    gender: IntArray
    region: IntArray
    tier: IntArray
    sessions: IntArray
    favourite_leaf: IntArray  # (users, FAVOURITE_LEAVES)
    favourite_cdf: FloatArray  # (users, FAVOURITE_LEAVES), cumulative weights
    preferred_brand: IntArray  # (users, PREFERRED_BRANDS)
    price_level: FloatArray  # the price z-score the user likes
    price_width: FloatArray  # how far from it the user still looks
    p_click: FloatArray
    p_search: FloatArray
    p_cart: FloatArray
    p_buy: FloatArray
    p_rebuy: FloatArray


@dataclass
class EventRows:
    """Columns of event rows, in no particular order until sorted."""

    session: IntArray
    order: FloatArray  # position within the session
    type: IntArray
    item: IntArray  # -1 for SEARCH
    quantity: IntArray  # 0 when the type has none
    query: IntArray  # index into the query list, 0 is ""
    ts: IntArray

    @staticmethod
    def concat(parts: Sequence[EventRows]) -> EventRows:
        return EventRows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(EventRows)))

    def take(self, index: IntArray) -> EventRows:
        return EventRows(*(getattr(self, f.name)[index] for f in fields(self)))
