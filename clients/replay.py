"""Bulk-loading a shop through the public API: catalog, users, then events in time order.

An example partner integration as much as a tool: it is what a shop's backfill job looks like.
Event batches are cut in time order and sent with a few in flight at once; when two batches of one
user overlap, the fold places their events by timestamp, so the result is the same as a serial send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from tqdm import tqdm

from clients.client import AsyncAisleClient
from protos.aisle.v1 import catalog_pb2, events_pb2, users_pb2

T = TypeVar("T")


@dataclass(slots=True)
class ReplayReport:
    items: int
    users: int
    events: int
    rejected: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def batched(values: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(values)
    while batch := list(islice(it, size)):
        yield batch


async def replay(
    client: AsyncAisleClient,
    items: Sequence[catalog_pb2.Item],
    users: Sequence[users_pb2.User],
    events: Iterable[events_pb2.Event],
    total_events: int | None = None,
    batch: int = 500,
    in_flight: int = 4,
    progress: bool = True,
) -> ReplayReport:
    """Send the catalog and users first (recommendations need them), then the events."""
    started = time.perf_counter()
    for item_batch in batched(items, batch):
        await client.upsert_items(item_batch)
    for user_batch in batched(users, 200):
        await asyncio.gather(*(client.upsert_user(user) for user in user_batch))

    sent = rejected = 0
    pending: set[asyncio.Task[events_pb2.TrackResponse]] = set()
    with tqdm(total=total_events, unit="ev", desc="replaying events", disable=not progress) as bar:
        for chunk in batched(events, batch):
            if len(pending) >= in_flight:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    response = task.result()
                    rejected += len({r.index for r in response.rejected})
            pending.add(asyncio.ensure_future(client.track(chunk)))
            sent += len(chunk)
            bar.update(len(chunk))
        for response in await asyncio.gather(*pending):
            rejected += len({r.index for r in response.rejected})
    return ReplayReport(len(items), len(users), sent, rejected, time.perf_counter() - started)
