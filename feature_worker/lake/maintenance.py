"""Keeping the batch store small and lawful: compaction, old-file removal, forgetting a customer.

Every flush of the sink writes one small Parquet file per table and day; `optimize` rewrites each day's
small files into large ones (Delta `OPTIMIZE`), checkpoints the log and removes files that no version newer
than `retention_hours` still reads (`VACUUM`). It runs beside a live sink: compaction only rewrites files
(it never conflicts with appends), and the recorded positions are carried over by the log. Run it daily:
`python -m feature_worker lake-optimize --env-file .services.env`.

`forget_user` deletes a customer's rows from `events` and `users` (and from `exposures`, the answers the server
logged, when that table exists; `optimize` compacts and vacuums it too); their bytes leave the disk at the next
vacuum that passes the retention (old versions still hold them until then). `optimize` first forgets every
customer an erasure queued (`erasures.ErasureQueue`), so the erasure completes at the next maintenance.
"""

from __future__ import annotations

import logging
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from feature_worker.lake.erasures import ErasureQueue
from feature_worker.lake.schema import EVENTS, TABLES, USERS
from feature_worker.lake.writer import Lake, LakeUnavailable, table_uri

log = logging.getLogger(__name__)

#: The server's exposure table (`server.experiments.lake.EXPOSURES`), named here: the worker never imports the server.
EXPOSURES = "exposures"
#: Tables the worker does not write but maintains and forgets customers in when they exist.
OPTIONAL_TABLES = (EXPOSURES,)

#: Versions younger than this stay readable after a vacuum (trainers pin a version when they start).
DEFAULT_RETENTION_HOURS = 168


def optimize(lake: Lake, retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict[str, dict[str, Any]]:
    """Forget the customers erasures queued, then compact, checkpoint and vacuum every table (the server's
    `exposures` too, when it exists); returns what was done per table (and under `erasures`, the customers
    forgotten and the rows deleted)."""
    report: dict[str, dict[str, Any]] = {"erasures": forget_scheduled(lake)}
    tables: dict[str, DeltaTable] = {}
    for name in TABLES:
        lake.refresh(name)
        tables[name] = lake.tables[name]
    tables.update(_optional_tables(lake))
    for name, table in tables.items():
        try:
            metrics = table.optimize.compact()
            table.create_checkpoint()
            removed = table.vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
            )
        except DeltaError as exc:
            raise LakeUnavailable(f"cannot optimize {table_uri(lake.root, name)}: {exc}") from exc
        report[name] = {
            "version": table.version(),
            "files_added": metrics.get("numFilesAdded", 0),
            "files_removed": metrics.get("numFilesRemoved", 0),
            "files_vacuumed": len(removed),
        }
        log.info("optimized %s: %s", name, report[name])
    return report


def forget_user(lake: Lake, user_id: str, optional: dict[str, DeltaTable] | None = None) -> int:
    """Delete every row of `user_id` from `events` and `users`, and from the optional tables (`exposures`, the
    answers the server's exposure log wrote, `server.experiments.lake`; opened here unless ``optional`` is
    given); returns the rows deleted."""
    predicate = "user_id = '{}'".format(user_id.replace("'", "''"))
    deleted = 0
    for name in (EVENTS, USERS):
        try:
            lake.refresh(name)
            metrics = lake.tables[name].delete(predicate)
        except DeltaError as exc:
            raise LakeUnavailable(f"cannot delete from {table_uri(lake.root, name)}: {exc}") from exc
        deleted += int(metrics.get("num_deleted_rows", 0))
    for name, table in (_optional_tables(lake) if optional is None else optional).items():
        try:
            deleted += int(table.delete(predicate).get("num_deleted_rows", 0))
        except DeltaError as exc:
            raise LakeUnavailable(f"cannot delete from {table_uri(lake.root, name)}: {exc}") from exc
    return deleted


def forget_scheduled(lake: Lake) -> dict[str, Any]:
    """Run `forget_user` for every customer queued by an erasure, then take them off the queue."""
    queue = ErasureQueue(lake.root)
    pending = queue.pending()
    optional = _optional_tables(lake) if pending else {}
    deleted = sum(forget_user(lake, user_id, optional) for user_id in pending)
    queue.done(pending)
    if pending:
        log.info("forgot %d erased customers: %d rows deleted", len(pending), deleted)
    return {"customers": len(pending), "rows_deleted": deleted}


def _optional_tables(lake: Lake) -> dict[str, DeltaTable]:
    """The tables other writers create in the lake (the server's `exposures`), opened, when they exist."""
    found: dict[str, DeltaTable] = {}
    for name in OPTIONAL_TABLES:
        uri = table_uri(lake.root, name)
        try:
            if DeltaTable.is_deltatable(uri):
                found[name] = DeltaTable(uri)
        except DeltaError as exc:
            raise LakeUnavailable(f"cannot open {uri}: {exc}") from exc
    return found
