"""Erasures waiting for the batch store: a small Delta table, `erasures`, beside `events`, `items` and `users`.

An erasure (`UserService.EraseUser`) removes a customer from everything the servers read at once, but
deleting rows from the large tables rewrites their files, which is maintenance work: the erasure appends the
customer here (`ErasureQueue.schedule`), and the next `lake-optimize` (`maintenance.optimize`) runs
`forget_user` for every customer queued, vacuums, and removes them from the queue. A Delta table (not a
file in some data directory) so that it works wherever the lake lives, object storage included, and whichever
process erased (any server, either mode).
"""

from __future__ import annotations

import logging

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from feature_worker.lake.writer import LakeUnavailable, table_uri

log = logging.getLogger(__name__)

ERASURES = "erasures"
SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("receipt_id", pa.string(), nullable=False),
        pa.field("requested_ms", pa.int64(), nullable=False),
    ]
)


class ErasureQueue:
    """The customers whose rows the next maintenance deletes."""

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            self.table = DeltaTable.create(
                table_uri(root, ERASURES), SCHEMA, mode="ignore", name="aisle_erasures"
            )
        except (DeltaError, OSError) as exc:
            raise LakeUnavailable(f"cannot open {table_uri(root, ERASURES)}: {exc}") from exc

    def schedule(self, user_id: str, receipt_id: str, requested_ms: int) -> None:
        rows = pa.Table.from_pylist(
            [{"user_id": user_id, "receipt_id": receipt_id, "requested_ms": requested_ms}], schema=SCHEMA
        )
        try:
            write_deltalake(self.table, rows, mode="append")
        except (DeltaError, OSError) as exc:
            raise LakeUnavailable(
                f"cannot schedule an erasure in {table_uri(self.root, ERASURES)}: {exc}"
            ) from exc

    def pending(self) -> list[str]:
        """The customers queued, each once, in the order first queued."""
        try:
            self.table.update_incremental()
            ids = self.table.to_pyarrow_table(columns=["user_id"])["user_id"].to_pylist()
        except (DeltaError, OSError) as exc:
            raise LakeUnavailable(f"cannot read {table_uri(self.root, ERASURES)}: {exc}") from exc
        return list(dict.fromkeys(ids))

    def done(self, user_ids: list[str]) -> None:
        """Remove these customers from the queue (their rows are deleted from the other tables)."""
        for user_id in user_ids:
            try:
                self.table.delete("user_id = '{}'".format(user_id.replace("'", "''")))
            except (DeltaError, OSError) as exc:
                raise LakeUnavailable(f"cannot update {table_uri(self.root, ERASURES)}: {exc}") from exc
