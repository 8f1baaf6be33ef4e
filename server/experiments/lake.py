"""The lake's `exposures` table: one row per answer shown, beside the `events` table it is joined with.

Partitioned by `date` (the UTC day of `ts_ms`) like the other tables (`feature_worker.lake.schema`). Appends come
from the exposure log's drain task (`exposures.LakeExposureSink`), batched, in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import DeltaError

from feature_worker.errors import StoreUnavailable
from feature_worker.lake.schema import PARTITION_BY, utc_date
from feature_worker.lake.writer import create_table, prepare_root, table_uri
from protos.aisle.v1 import experiments_pb2

EXPOSURES = "exposures"

EXPOSURES_SCHEMA = pa.schema(
    [
        pa.field("recommendation_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("variant", pa.string(), nullable=False),
        pa.field("experiments", pa.map_(pa.string(), pa.string())),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("teams", pa.list_(pa.string())),
        pa.field("model_version", pa.string()),
        pa.field("backfilled", pa.int32()),
        pa.field("served_us", pa.int64()),
        pa.field("context_item_id", pa.string()),
        pa.field("date", pa.string(), nullable=False),
    ]
)


def rows(exposures: Sequence[experiments_pb2.Exposure]) -> pa.Table:
    """The exposures as an Arrow table in `EXPOSURES_SCHEMA`."""
    columns: dict[str, list[object]] = {field.name: [] for field in EXPOSURES_SCHEMA}
    for e in exposures:
        columns["recommendation_id"].append(e.recommendation_id)
        columns["user_id"].append(e.user_id)
        columns["session_id"].append(e.session_id)
        columns["ts_ms"].append(e.ts_ms)
        columns["variant"].append(e.variant)
        columns["experiments"].append(list(e.experiments.items()))
        columns["item_ids"].append(list(e.item_ids))
        columns["teams"].append(list(e.teams))
        columns["model_version"].append(e.model_version)
        columns["backfilled"].append(e.backfilled)
        columns["served_us"].append(e.served_us)
        columns["context_item_id"].append(e.context_item_id)
        columns["date"].append(utc_date(e.ts_ms))
    return pa.Table.from_pydict(columns, schema=EXPOSURES_SCHEMA)


class ExposureTable:
    """Appends to ``<lake>/exposures`` (created when missing). One writer thread at a time."""

    def __init__(self, root: str | Path) -> None:
        root = prepare_root(root)
        self.uri = table_uri(root, EXPOSURES)
        try:
            self.table = create_table(root, EXPOSURES, EXPOSURES_SCHEMA)
        except (DeltaError, OSError) as exc:
            raise StoreUnavailable(f"cannot open {self.uri}: {exc}") from exc

    def append(self, exposures: Sequence[experiments_pb2.Exposure]) -> None:
        """Append in one commit (concurrent appenders are retried by Delta's optimistic commit)."""
        try:
            write_deltalake(self.table, rows(exposures), mode="append", partition_by=PARTITION_BY)
        except (DeltaError, OSError) as exc:
            raise StoreUnavailable(f"cannot append to {self.uri}: {exc}") from exc
