"""Restart time of the embedded server: `python -m loadtest.embedded_restart --shop DIR [--events N] [--sealed]`.

Writes a journal of N events of a generated shop (its catalog first) through the embedded write path
(`EmbeddedIngest`: journal, then fold), then measures, each in a fresh process state:

1. a start that replays the whole journal (no snapshot: how every start went before snapshots);
2. taking a snapshot of that state (captured on the event loop, then written), as a clean stop does;
3. a start from that snapshot with nothing after it;
4. a start from a snapshot taken `--tail-mb` MiB of journal before its end (the worst case with
   `AISLE_SNAPSHOT_EVERY_MB` at that value: a kill just before the next snapshot).

With `--sealed`, encryption is on (the default of `python -m server`): events and features sealed with
per-customer keys, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from feature_worker.catalog import Catalog
from feature_worker.privacy.keystores.file import FileKeyStore
from feature_worker.privacy.sealing import MasterKey
from feature_worker.privacy.vault import Vault
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.users import UserDirectory
from server.embedded.ingest import EmbeddedIngest
from server.embedded.journal import Journal
from server.embedded.snapshot import capture, freeze, write
from trainer.data.generated import read_events, read_items

BATCH = 500


def ingest_on(data: Path, master: MasterKey | None, snapshots: bool, every_mb: int = 0) -> EmbeddedIngest:
    keys = FileKeyStore(data / "keys.txt") if master is not None else None
    vault = Vault(master, keys) if master is not None and keys is not None else None
    return EmbeddedIngest(
        Journal(data / "journal.bin"),
        Catalog(),
        UserDirectory(),
        MemoryFeatureStore(),
        vault,
        keys,
        snapshot_path=data / "snapshot.bin" if snapshots else None,
        snapshot_every_bytes=every_mb << 20,
    )


async def timed_start(data: Path, master: MasterKey | None, snapshots: bool) -> tuple[float, int, int]:
    ingest = ingest_on(data, master, snapshots)
    started = time.perf_counter()
    replayed = await ingest.recover()
    elapsed = time.perf_counter() - started
    users = len(ingest.store.features.users)
    ingest.journal.close()
    if ingest.reader.keys is not None:
        ingest.reader.keys.close()
    return elapsed, replayed, users


async def run(shop: Path, n_events: int, sealed: bool, tail_mb: int) -> None:
    master = MasterKey(os.urandom(32)) if sealed else None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        writer = ingest_on(data, master, snapshots=False)
        await writer.upsert_items(list(read_items(shop)))
        batch, written, tail_at = [], 0, 0
        started = time.perf_counter()
        for event in read_events(shop):
            batch.append(event)
            if len(batch) == BATCH:
                await writer.events(batch)
                written += len(batch)
                batch = []
                if written >= n_events:
                    break
        if batch:
            await writer.events(batch)
            written += len(batch)
        journal_bytes = writer.journal.size
        print(
            f"journal: {written:,} events, {journal_bytes / 2**20:,.1f} MiB, written in "
            f"{time.perf_counter() - started:.1f} s ({'sealed' if sealed else 'clear'})"
        )

        # The snapshot a clean stop takes, and one taken `tail_mb` earlier (copied aside first).
        tail_at = max(0, journal_bytes - (tail_mb << 20))
        writer.journal.close()
        if writer.reader.keys is not None:
            writer.reader.keys.close()

        whole_s, replayed, users = await timed_start(data, master, snapshots=False)
        print(
            f"start, whole journal replayed: {whole_s:.1f} s ({replayed:,} records, {users:,} users, "
            f"{written / whole_s:,.0f} events/s)"
        )

        # A snapshot covering the journal up to `tail_at`: a journal cut there, snapshotted, then the rest put back.
        early = Path(tmp) / "early"
        early.mkdir()
        # Set-up before anything is timed: a blocking copy is what it should be.
        with open(data / "journal.bin", "rb") as src, open(early / "journal.bin", "wb") as dst:  # noqa: ASYNC230
            dst.write(src.read(_record_boundary(data / "journal.bin", tail_at)))
        if (data / "keys.txt").exists():
            shutil.copy(data / "keys.txt", early / "keys.txt")
        snapper = ingest_on(early, master, snapshots=True, every_mb=1 << 20)
        await snapper.recover()
        await snapper.snapshot()
        snapper.journal.close()
        if snapper.reader.keys is not None:
            snapper.reader.keys.close()
        shutil.copy(early / "snapshot.bin", data / "snapshot.bin")

        tail_s, tail_records, _ = await timed_start(data, master, snapshots=True)
        print(f"start, snapshot + {tail_mb} MiB tail: {tail_s:.1f} s ({tail_records:,} records replayed)")

        full = ingest_on(data, master, snapshots=True, every_mb=1 << 20)
        await full.recover()
        # What a snapshot costs (a clean stop takes one of everything): the freeze on the event loop (requests
        # wait for it), then the encoding and the write in a thread (requests go on).
        started = time.perf_counter()
        state = freeze(full.journal.size, full.catalog, full.users, full.store.features)
        frozen_s = time.perf_counter() - started
        size = write(data / "snapshot.bin", capture(state, full._sealer))
        written_s = time.perf_counter() - started - frozen_s
        full.store.features.thaw()
        full.snapshot_every_bytes = 0
        await full.close()
        print(
            f"snapshot of everything: frozen on the loop in {1000 * frozen_s:.0f} ms, encoded and written in "
            f"{written_s:.1f} s (a thread), {size / 2**20:,.1f} MiB"
        )

        empty_s, none, _ = await timed_start(data, master, snapshots=True)
        print(f"start, snapshot + empty tail: {empty_s:.1f} s ({none} records replayed)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {peak:,.0f} MiB")


def _record_boundary(path: Path, at_most: int) -> int:
    """The end of the last whole journal record at or before byte `at_most`."""
    from server.embedded.journal import records

    end = 0
    with open(path, "rb") as f:
        for _, _, record_end in records(f):
            if record_end > at_most:
                break
            end = record_end
    return end


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.embedded_restart", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sealed", action="store_true", help="encryption on (per-customer keys)")
    parser.add_argument(
        "--tail-mb", type=int, default=16, help="journal after the snapshot in the worst case"
    )
    args = parser.parse_args()
    asyncio.run(run(args.shop, args.events, args.sealed, args.tail_mb))


if __name__ == "__main__":
    main()
