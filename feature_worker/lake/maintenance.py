"""Keeping the batch store small and lawful: compaction, old-file removal, forgetting a customer.

Every flush of the sink writes one small Parquet file per table and day; `optimize` rewrites each day's
small files into large ones (Delta `OPTIMIZE`), checkpoints the log and removes files that no version newer
than `retention_hours` still reads (`VACUUM`). It runs beside a live sink: compaction only rewrites files
(it never conflicts with appends), and the recorded positions are carried over by the log. Run it daily:
`python -m feature_worker lake-optimize --env-file .services.env`.

`forget_user` deletes a customer's rows from `events` and `users` (and from `exposures`, the answers the server
logged, when that table exists); their bytes leave the disk at the next
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

#: Versions younger than this stay readable after a vacuum (trainers pin a version when they start).
DEFAULT_RETENTION_HOURS = 168


def optimize(lake: Lake, retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict[str, dict[str, Any]]:
    """Forget the customers erasures queued, then compact, checkpoint and vacuum every table; returns what was
    done per table (and under `erasures`, the customers forgotten and the rows deleted)."""
    report: dict[str, dict[str, Any]] = {"erasures": forget_scheduled(lake)}
    for name in TABLES:
        table = lake.tables[name]
        try:
            lake.refresh(name)
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


def forget_user(lake: Lake, user_id: str) -> int:
    """Delete every row of `user_id` from `events` and `users`; returns the rows deleted."""
    predicate = "user_id = '{}'".format(user_id.replace("'", "''"))
    deleted = 0
    for name in (EVENTS, USERS):
        try:
            lake.refresh(name)
            metrics = lake.tables[name].delete(predicate)
        except DeltaError as exc:
            raise LakeUnavailable(f"cannot delete from {table_uri(lake.root, name)}: {exc}") from exc
        deleted += int(metrics.get("num_deleted_rows", 0))
    # The answers shown to the customer (written by the server's exposure log, `server.experiments.lake`).
    exposures = table_uri(lake.root, EXPOSURES)
    try:
        if DeltaTable.is_deltatable(exposures):
            deleted += int(DeltaTable(exposures).delete(predicate).get("num_deleted_rows", 0))
    except DeltaError as exc:
        raise LakeUnavailable(f"cannot delete from {exposures}: {exc}") from exc
    return deleted


def forget_scheduled(lake: Lake) -> dict[str, Any]:
    """Run `forget_user` for every customer queued by an erasure, then take them off the queue."""
    queue = ErasureQueue(lake.root)
    pending = queue.pending()
    deleted = sum(forget_user(lake, user_id) for user_id in pending)
    queue.done(pending)
    if pending:
        log.info("forgot %d erased customers: %d rows deleted", len(pending), deleted)
    return {"customers": len(pending), "rows_deleted": deleted}
