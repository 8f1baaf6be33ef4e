"""A tiny generated data set whose right answers are known: customers shop one cluster of items each.

``CLUSTERS`` clusters of ``CLUSTER_SIZE`` items (each its own category); each user views every item of one
cluster, in an order of their own: half of them in a first visit, the rest in a second visit after every
user's first. Visits are an hour apart and their views a minute apart. Whatever a user has seen, the right
answer is an unseen item of their cluster, which any model of co-occurrence finds and popularity cannot.
"""

from __future__ import annotations

import itertools
import random

from protos.aisle.v1 import catalog_pb2, events_pb2
from trainer.data.dataset import Dataset

CLUSTERS = 30
CLUSTER_SIZE = 4
USERS_PER_CLUSTER = 8
START_MS = 1_767_225_600_000
MINUTE = 60_000
HOUR = 3_600_000
FIRST_VISITS = list(itertools.combinations(range(CLUSTER_SIZE), CLUSTER_SIZE // 2))


def cluster_of(item_id: str) -> int:
    return int(item_id[1:]) // CLUSTER_SIZE


def clusters_dataset(seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    items = {
        f"i{i}": catalog_pb2.Item(item_id=f"i{i}", category=f"c{i // CLUSTER_SIZE}", in_stock=True)
        for i in range(CLUSTERS * CLUSTER_SIZE)
    }
    users = [(u, c) for c in range(CLUSTERS) for u in range(USERS_PER_CLUSTER)]
    rng.shuffle(users)
    half = CLUSTER_SIZE // 2
    orders = []
    for u, c in users:
        members = [f"i{c * CLUSTER_SIZE + j}" for j in range(CLUSTER_SIZE)]
        # The users of a cluster take turns over every possible first visit, so each pair of its items is seen
        # together in someone's first visit: the answer is then known even from first visits alone.
        first = list(FIRST_VISITS[u % len(FIRST_VISITS)])
        rest = [j for j in range(CLUSTER_SIZE) if j not in first]
        rng.shuffle(first)
        rng.shuffle(rest)
        orders.append((f"u{c}-{u}", [members[j] for j in first + rest]))
    events = []
    for visit, (lo, hi) in enumerate(((0, half), (half, CLUSTER_SIZE))):
        for n, (user, members) in enumerate(orders):
            start = START_MS + (visit * len(orders) + n) * HOUR
            for position in range(lo, hi):
                events.append(
                    events_pb2.Event(
                        event_id=f"{user}-{position}",
                        type=events_pb2.VIEW,
                        user_id=user,
                        item_id=members[position],
                        ts_ms=start + (position - lo) * MINUTE,
                    )
                )
    return Dataset("clusters", items, events)


def sequences(dataset: Dataset) -> dict[str, list[str]]:
    """user -> items in time order: the data set in S3-Rec's shape."""
    out: dict[str, list[str]] = {}
    for event in dataset.events:
        out.setdefault(event.user_id, []).append(event.item_id)
    return out
