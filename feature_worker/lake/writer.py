"""Appending to the batch store's Delta tables, with the positions the rows came from in the same commit.

Exactly once, without a transaction coordinator: every append is one Delta commit that holds both the new
rows and, as Delta application transactions (`txn` actions, one per source: a Kafka partition, or the
embedded server's journal), the position just past the last record those rows came from. A commit is
atomic, so the table either has the rows and the position or neither; a writer that starts (or takes a
partition over) reads the position from the table and resumes there, whatever the source's own bookkeeping
(Kafka's committed offsets) says. Rows are therefore never lost (nothing past the recorded position is
skipped) and never duplicated (nothing before it is written again).

Two writers on one source (a sink that was rebalanced away but has not noticed) cannot both append: each
append names the positions it expects the table to hold (`expected`, where its batch started), the
snapshot is checked against them, and Delta's conflict check refuses a commit when another commit with the
same application id won in between (`CommitFailedError`). Both raise `LakeConflict`, and nothing is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from feature_worker.errors import AisleError, StoreUnavailable
from feature_worker.lake.schema import PARTITION_BY, SCHEMAS, TABLES

log = logging.getLogger(__name__)


class LakeConflict(AisleError):
    """Another writer recorded positions this one expected to own: re-read them and start over from there."""

    status = "ABORTED"


class LakeUnavailable(StoreUnavailable):
    """The batch store cannot be read or written (disk, object store); retrying the same append is safe."""


#: Longest wait between two tries of an append while the store cannot be written.
MAX_BACKOFF_S = 2.0


def append_retrying(
    lake: Lake,
    name: str,
    rows: pa.Table,
    positions: Mapping[str, int],
    expected: Mapping[str, int | None],
    writer: str,
    give_up: Callable[[float], bool],
) -> int:
    """`lake.append`, tried again while the store cannot be written: the one append path of the batch sink and
    of the embedded server's journal tail. Blocking (call it from a thread).

    Waits 0.1 s after a `LakeUnavailable`, doubling up to `MAX_BACKOFF_S`, and raises it instead once
    `give_up(the next wait)` is true (the caller is stopping; nothing was recorded, so whoever runs next appends
    the rows again). A `LakeConflict` is raised at once: what to do then is the caller's.
    """
    backoff = 0.1
    while True:
        try:
            return lake.append(name, rows, positions, expected, writer)
        except LakeUnavailable as exc:
            if give_up(backoff):
                raise
            log.warning("%s; retrying in %.1fs", exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def table_uri(root: str | Path, name: str) -> str:
    """Where table `name` lives under the batch store's root (a directory or an object-store URI)."""
    return f"{str(root).rstrip('/')}/{name}"


def prepare_root(root: str | Path) -> str:
    """The batch store's `root` as a string, its directory made first when it is local (an object-store URI
    needs none)."""
    root = str(root)
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
    return root


def create_table(root: str, name: str, schema: pa.Schema) -> DeltaTable:
    """Table `name` under the batch store's `root`, created empty with `schema` when missing: partitioned by
    `PARTITION_BY` like every table of the lake, named ``aisle_<name>``. Delta's and the file system's errors
    propagate: the caller says what it could not open."""
    return DeltaTable.create(
        table_uri(root, name), schema, mode="ignore", partition_by=PARTITION_BY, name=f"aisle_{name}"
    )


class Lake:
    """The three tables of one batch store (`schema.TABLES`), created empty when missing.

    Not thread-safe: one thread (or one task at a time) appends to a `Lake`. Each table object follows the
    table's latest version as this writer commits; `refresh` reads other writers' commits too.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = prepare_root(root)
        self.tables: dict[str, DeltaTable] = {}
        try:
            for name in TABLES:
                self.tables[name] = create_table(self.root, name, SCHEMAS[name])
        except (DeltaError, OSError) as exc:
            raise LakeUnavailable(f"cannot open the batch store at {self.root}: {exc}") from exc

    def refresh(self, name: str) -> None:
        """Load the table's latest version (other writers' commits included)."""
        try:
            self.tables[name].update_incremental()
        except (DeltaError, OSError) as exc:
            raise LakeUnavailable(f"cannot read {table_uri(self.root, name)}: {exc}") from exc

    def position(self, name: str, app_id: str) -> int | None:
        """The position recorded for source `app_id` in table `name` at the loaded version; None if never."""
        version = self.tables[name].transaction_version(app_id)
        return None if version is None else int(version)

    def version(self, name: str) -> int:
        return int(self.tables[name].version())

    def append(
        self,
        name: str,
        rows: pa.Table,
        positions: Mapping[str, int],
        expected: Mapping[str, int | None],
        writer: str,
    ) -> int:
        """Append `rows` and record `positions` (app id -> next position to read) in one commit.

        `expected` holds, per app id, the position this batch started from (None: nothing recorded yet).
        An append with no rows still commits when positions moved (a batch of dead letters only), so that
        they are not read again. Returns the table's new version.

        Raises `LakeConflict` (nothing written) when the recorded positions are not `expected`, and
        `LakeUnavailable` when the store cannot be written (nothing recorded: retrying is safe).
        """
        table = self.tables[name]
        for app_id, start in expected.items():
            recorded = self.position(name, app_id)
            if recorded != start:
                raise LakeConflict(
                    f"{table_uri(self.root, name)}: {app_id} is at {recorded}, expected {start}"
                )
        properties = CommitProperties(
            app_transactions=[Transaction(app_id, int(end)) for app_id, end in positions.items()],
            custom_metadata={"aisle.writer": writer, "aisle.rows": str(rows.num_rows)},
            max_commit_retries=20,
        )
        try:
            write_deltalake(
                table, rows, mode="append", partition_by=PARTITION_BY, commit_properties=properties
            )
        except CommitFailedError as exc:
            self.refresh(name)
            raise LakeConflict(f"{table_uri(self.root, name)}: {exc}") from exc
        except (DeltaError, OSError) as exc:
            try:
                self.refresh(name)  # the commit may have failed after another writer's: see it
            except LakeUnavailable:
                pass
            raise LakeUnavailable(f"cannot append to {table_uri(self.root, name)}: {exc}") from exc
        return self.version(name)
