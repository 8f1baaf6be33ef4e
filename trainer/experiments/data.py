"""The lake's exposures and outcome events of one experiment, and their attribution to answers.

Attribution (`attribute`): a click, add-to-cart or purchase is credited to the answer whose `recommendation_id` it
carries when that answer is in the exposures; else to the last answer that showed the event's item to the same
user (or session) within `window_ms` before the event. Events attributed to no answer of the experiment do not
count as its outcomes (they remain in the pre-period covariates, `pre_period`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable

from feature_worker.lake.writer import table_uri
from server.experiments.lake import EXPOSURES

OUTCOMES = ("CLICK", "ADD_TO_CART", "PURCHASE")
EVENT_COLUMNS = [
    "event_id",
    "type",
    "user_id",
    "session_id",
    "item_id",
    "item_ids",
    "ts_ms",
    "price",
    "quantity",
    "recommendation_id",
]


def read_exposures(lake: Path | str, experiment: str) -> pd.DataFrame:
    """Exposures of `experiment`: one row per answer, with `variant` (its variant in this experiment) and `unit`
    (user id, else "session:" + session id)."""
    table = DeltaTable(table_uri(lake, EXPOSURES)).to_pyarrow_table()
    frame: pd.DataFrame = table.to_pandas()  # pyarrow is untyped (see pyproject.toml)
    if frame.empty:
        return frame.assign(variant=pd.Series(dtype=str), unit=pd.Series(dtype=str))
    variant = frame["experiments"].map(lambda pairs: dict(pairs or []).get(experiment))
    frame = frame.assign(variant=variant)
    frame = frame[frame["variant"].notna()].copy()
    frame["unit"] = np.where(
        frame["user_id"] != "", frame["user_id"], "session:" + frame["session_id"].fillna("")
    )
    return frame.drop_duplicates("recommendation_id").reset_index(drop=True)


def read_events(lake: Path | str, units: set[str] | None = None) -> pd.DataFrame:
    """Events from the lake (duplicates by event id dropped), with `unit` and `revenue` (price x quantity for
    purchases); only those of `units` when given."""
    frame: pd.DataFrame = (
        DeltaTable(table_uri(lake, "events")).to_pyarrow_table(columns=EVENT_COLUMNS).to_pandas()
    )
    frame = frame.drop_duplicates("event_id")
    frame["unit"] = np.where(
        frame["user_id"] != "", frame["user_id"], "session:" + frame["session_id"].fillna("")
    )
    if units is not None:
        frame = frame[frame["unit"].isin(units)]
    quantity = frame["quantity"].fillna(0).clip(lower=1)
    frame["revenue"] = np.where(frame["type"] == "PURCHASE", frame["price"].fillna(0.0) * quantity, 0.0)
    return frame.reset_index(drop=True)


def attribute(exposures: pd.DataFrame, events: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """Outcome events (click, add-to-cart, purchase; a multi-item purchase one row per item) with the
    `recommendation_id` of the answer they are credited to, its `variant` and `unit`, and the item's `team`
    (interleaving; "" otherwise). Unattributed events are left out."""
    outcomes = events[events["type"].isin(OUTCOMES)].copy()
    if outcomes.empty or exposures.empty:
        return outcomes.assign(
            attributed_to=pd.Series(dtype=str), variant=pd.Series(dtype=str), team=pd.Series(dtype=str)
        )
    # One row per item acted on.
    many = outcomes["item_ids"].map(lambda ids: list(ids) if ids is not None and len(ids) else None)
    outcomes["item"] = [ids if ids else [item] for ids, item in zip(many, outcomes["item_id"])]
    outcomes = outcomes.explode("item")
    if "PURCHASE" in set(
        outcomes["type"]
    ):  # a basket's revenue is split over its items, not counted per item
        per_event = outcomes.groupby("event_id")["item"].transform("size")
        outcomes["revenue"] = outcomes["revenue"] / per_event
    shown = exposures[["recommendation_id", "unit", "ts_ms", "variant", "item_ids", "teams"]].copy()
    shown["pairs"] = pd.Series(
        [
            list(zip(items, teams if teams is not None and len(teams) else [""] * len(items)))
            for items, teams in zip(shown["item_ids"], shown["teams"])
        ],
        index=shown.index,
        dtype=object,
    )
    exploded = shown.explode("pairs").dropna(subset=["pairs"])
    exploded["item"] = exploded["pairs"].map(lambda p: p[0])
    exploded["team"] = exploded["pairs"].map(lambda p: p[1])
    exploded = exploded[["recommendation_id", "unit", "ts_ms", "variant", "item", "team"]]

    # 1. By recommendation id (the item's team when the answer showed it).
    by_id = outcomes.merge(
        exploded[["recommendation_id", "variant"]].drop_duplicates("recommendation_id"),
        on="recommendation_id",
        how="inner",
    )
    teams = exploded[["recommendation_id", "item", "team"]].drop_duplicates(["recommendation_id", "item"])
    by_id = by_id.merge(teams, on=["recommendation_id", "item"], how="left")
    by_id["team"] = by_id["team"].fillna("")
    by_id["attributed_to"] = by_id["recommendation_id"]
    # 2. The rest: the last answer that showed the item to the unit within the window.
    rest = outcomes[~outcomes["recommendation_id"].isin(set(exploded["recommendation_id"]))]
    rest = rest.sort_values("ts_ms")
    candidates = exploded.sort_values("ts_ms").rename(columns={"recommendation_id": "attributed_to"})
    if not rest.empty:
        matched = pd.merge_asof(
            rest.drop(columns=["recommendation_id"]),
            candidates,
            on="ts_ms",
            by=["unit", "item"],
            direction="backward",
            tolerance=window_ms,
        )
        matched = matched[matched["attributed_to"].notna()]
        matched["recommendation_id"] = matched["attributed_to"]
    else:
        matched = rest.assign(
            attributed_to=pd.Series(dtype=str), variant=pd.Series(dtype=str), team=pd.Series(dtype=str)
        )
    both = pd.concat([by_id, matched], ignore_index=True)
    return both.reset_index(drop=True)


def pre_period(events: pd.DataFrame, first_exposure: pd.Series, days: float) -> pd.DataFrame:
    """Per unit, its behaviour in the `days` before its first exposure: clicks, carts, purchases, revenue (the
    CUPED covariates). Units without any pre-period event get zeros."""
    start = events["unit"].map(first_exposure)
    before = events[(events["ts_ms"] < start) & (events["ts_ms"] >= start - days * 86_400_000)]
    grouped = before.groupby("unit")

    def count(kind: str) -> pd.Series:
        """Per unit, how many of its pre-period events are of this type."""
        return (before["type"] == kind).groupby(before["unit"]).sum()

    out = pd.DataFrame(
        {
            "pre_clicks": count("CLICK"),
            "pre_carts": count("ADD_TO_CART"),
            "pre_purchases": count("PURCHASE"),
            "pre_revenue": grouped["revenue"].sum(),
            "pre_events": grouped.size(),
        }
    )
    return out.reindex(first_exposure.index, fill_value=0).astype(float)
