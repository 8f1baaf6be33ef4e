"""Events folded per second in process: `python -m loadtest.fold_throughput --shop DIR`.

Two figures: the bare fold into the in-process store (`apply_events`, batches of 500), and the
embedded server's whole write path without the network (`Engine.track`: validation, journal, fold).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from server.embedded.ingest import EmbeddedIngest
from server.embedded.journal import Journal
from server.engine import Engine
from trainer.data.generated import read_events, read_items

BATCH = 500


async def run(shop: Path, limit: int) -> None:
    items = list(read_items(shop))
    events = []
    for event in read_events(shop):
        events.append(event)
        if len(events) >= limit:
            break
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]

    catalog, store = Catalog(), MemoryFeatureStore()
    catalog.upsert_many(items)
    started = time.perf_counter()
    for batch in batches:
        await apply_events(store, catalog, batch)
    fold_s = time.perf_counter() - started
    print(
        f"fold only:      {len(events):,} events in {fold_s:.2f} s = {len(events) / fold_s:,.0f} events/s "
        f"({len(store.features.users):,} users)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        catalog, store = Catalog(), MemoryFeatureStore()
        catalog.upsert_many(items)
        ingest = EmbeddedIngest(Journal(Path(tmp) / "journal.bin"), catalog, UserDirectory(), store)
        engine = Engine(catalog, UserDirectory(), store, ingest, lists_refresh_s=1.0)
        started = time.perf_counter()
        for batch in batches:
            await engine.track(batch)
        track_s = time.perf_counter() - started
        await ingest.close()
    print(
        f"Engine.track:   {len(events):,} events in {track_s:.2f} s = {len(events) / track_s:,.0f} events/s "
        f"(validation + journal + fold, batches of {BATCH})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fold_throughput")
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--limit", type=int, default=2_000_000, help="fold at most this many events")
    args = parser.parse_args()
    asyncio.run(run(args.shop, args.limit))


if __name__ == "__main__":
    main()
