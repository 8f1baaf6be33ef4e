"""Deterministic generated retail data: a catalog, its users and thirty days of their events.

``generate_shop(users, items, seed, out)`` (and ``python -m trainer generate``) writes a shop that
:mod:`trainer.data.generated` reads back. The same arguments always give byte-identical files: every random draw
comes from ``numpy.random.default_rng`` seeded by ``seed``, nothing reads the clock, and the catalog draws from its
own stream, so a shop's catalog depends on ``(seed, items)`` only, whatever the number of users.

The model behind the events, so that a recommender has something real to learn:

* a category tree of departments, sub-categories and leaves (``beauty/skin/moisturizer``); the number of leaves
  grows with the square root of the catalog size;
* items have a Zipf-like popularity, a brand of their department (brand sizes are long-tailed, and each brand has
  a price tier) and a price drawn lognormally around their leaf's median;
* users have latent tastes: a Dirichlet preference over departments shifted by age and gender, a few favourite
  leaves, three preferred brands, a preferred price level and propensities to click, search, cart and buy; a
  lognormal activity level makes a few users heavy and most light (about 12 events per user on average);
* a session stays in one leaf, which gives real co-visitation: the user views several of its items, chosen
  without replacement with probability proportional to popularity x brand preference x price fit, and half
  the sessions focus on one brand of the leaf, so co-viewed items often share a brand; some views
  are clicked or carted, some carts are removed, some sessions start with a search (its query made of words of
  the category) and some end in a purchase, one row per item bought;
* buyers of consumables (groceries, beauty, pet food...) come back to buy the same item again after its
  replenishment interval, in a short view, cart, purchase session.

Sessions start over the thirty days before ``end_ts_ms``, more often in the evening (UTC), with seconds to minutes
between a session's events; every event has ``end_ts_ms - 30 days <= ts_ms < end_ts_ms``. Each cart or purchase of
an item comes after a view of that item by the same user in the same session.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from trainer.data.generated import EVENTS_FILE, ITEMS_FILE, META_FILE, USERS_FILE
from trainer.generate.catalog import build_catalog, item_messages
from trainer.generate.events import build_events
from trainer.generate.model import DAY_MS, DEFAULT_END_TS_MS, WINDOW_DAYS
from trainer.generate.users import build_users, user_messages
from trainer.generate.writing import write_atomically, write_events, write_jsonl


def generate_shop(
    users: int,
    items: int,
    seed: int,
    out: Path,
    end_ts_ms: int = DEFAULT_END_TS_MS,
    *,
    progress: bool = True,
) -> dict[str, int]:
    """Write a generated shop of ``users`` users and ``items`` items to the directory ``out``; return its meta.

    The files are ``items.jsonl``, ``users.jsonl``, ``events.csv`` and ``meta.json`` (see
    :mod:`trainer.data.generated`). Each file is written under a temporary name and renamed into place, and
    ``meta.json`` comes last, so a directory with a ``meta.json`` holds a complete shop. The meta is
    ``{"users", "items", "seed", "events", "start_ms", "end_ms"}``, and every event has
    ``start_ms <= ts_ms < end_ms = end_ts_ms``. ``progress`` shows tqdm bars on stderr.
    """
    if users < 1 or items < 1:
        raise ValueError(f"users and items must be at least 1, got users={users}, items={items}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    start_ms = end_ts_ms - WINDOW_DAYS * DAY_MS
    if start_ms < 0:
        raise ValueError(f"end_ts_ms must be at least {WINDOW_DAYS} days after the epoch, got {end_ts_ms}")
    # Independent streams per stage: the catalog does not change when only the number of users does.
    catalog_rng, users_rng, events_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )

    catalog = build_catalog(items, catalog_rng)
    messages = item_messages(catalog, catalog_rng)
    shop_users = build_users(users, catalog, users_rng)
    rows, session_user, queries = build_events(shop_users, catalog, events_rng, start_ms, end_ts_ms, progress)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / ITEMS_FILE, messages)
    write_jsonl(out / USERS_FILE, user_messages(shop_users))
    write_events(out / EVENTS_FILE, rows, session_user, queries, catalog, progress)
    meta = {
        "users": users,
        "items": items,
        "seed": seed,
        "events": len(rows.ts),
        "start_ms": start_ms,
        "end_ms": end_ts_ms,
    }
    write_atomically(out / META_FILE, lambda f: f.write(json.dumps(meta, indent=2) + "\n"))
    return meta


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``python -m trainer generate``."""
    parser.add_argument("--users", type=_positive_int, required=True, help="number of users")
    parser.add_argument("--items", type=_positive_int, required=True, help="number of catalog items")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the shop to")
    parser.add_argument(
        "--end-ts-ms",
        type=int,
        default=DEFAULT_END_TS_MS,
        help=f"end of the 30-day window, ms since the epoch (default {DEFAULT_END_TS_MS}, 2026-01-01T00:00Z)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the shop the arguments describe and print its meta as JSON."""
    meta = generate_shop(args.users, args.items, args.seed, args.out, end_ts_ms=args.end_ts_ms)
    print(json.dumps(meta))
    return 0
