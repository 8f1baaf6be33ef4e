"""Writing a shop: JSON lines, the events CSV and the meta, each file renamed into place when complete."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from tqdm import tqdm

from protos.aisle.v1 import events_pb2
from trainer.data.generated import EVENT_COLUMNS
from trainer.generate.model import CatalogArrays, EventRows, IntArray


def write_atomically(path: Path, write: Any) -> None:
    """Write through ``write(file)`` to a temporary name, then rename: readers never see half a file."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as f:
        write(f)
    os.replace(temporary, path)


def write_jsonl(path: Path, messages: Iterable[Message]) -> None:
    def write(f: Any) -> None:
        for message in messages:
            # Defaults printed too ("in_stock": false), so the JSON reads plainly to tools other than protobuf.
            data = json_format.MessageToDict(
                message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            if "attributes" in data:
                # Map order is not defined by protobuf; sorting keeps the files byte-identical across runs.
                data["attributes"] = dict(sorted(data["attributes"].items()))
            f.write(json.dumps(data, ensure_ascii=False) + "\n")

    write_atomically(path, write)


def write_events(
    path: Path,
    rows: EventRows,
    session_user: IntArray,
    queries: list[str],
    catalog: CatalogArrays,
    progress: bool,
) -> None:
    """Write ``events.csv``; event ids count up in file order and session ids in order of first event."""
    n = len(rows.ts)
    # Number sessions by their first event so that ids read in time order too.
    sessions, first_row = np.unique(rows.session, return_index=True)
    session_number = np.zeros(len(session_user), dtype=np.int64)
    session_number[sessions[np.argsort(first_row, kind="stable")]] = np.arange(1, len(sessions) + 1)

    type_names = [""] * (max(events_pb2.EventType.values()) + 1)
    for name, value in events_pb2.EventType.items():
        type_names[value] = name
    item_ids = [""] + [f"i{i + 1}" for i in range(len(catalog.price))]
    prices = [""] + [f"{p:.2f}" for p in catalog.price.tolist()]
    priced = (rows.type == events_pb2.ADD_TO_CART) | (rows.type == events_pb2.PURCHASE)
    price_index = np.where(priced, rows.item + 1, 0)
    user_ids = [f"u{u + 1}" for u in range(int(session_user.max(initial=-1)) + 1)]

    def write(f: Any) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        chunk = 200_000
        with tqdm(total=n, desc="events.csv", unit="event", unit_scale=True, disable=not progress) as bar:
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                users = session_user[rows.session[lo:hi]].tolist()
                writer.writerows(
                    zip(
                        [f"e{i}" for i in range(lo + 1, hi + 1)],
                        [type_names[t] for t in rows.type[lo:hi].tolist()],
                        [user_ids[u] for u in users],
                        [f"s{s}" for s in session_number[rows.session[lo:hi]].tolist()],
                        [item_ids[i] for i in (rows.item[lo:hi] + 1).tolist()],
                        rows.ts[lo:hi].tolist(),
                        [prices[i] for i in price_index[lo:hi].tolist()],
                        [str(q) if q else "" for q in rows.quantity[lo:hi].tolist()],
                        [queries[q] for q in rows.query[lo:hi].tolist()],
                        [""] * (hi - lo),
                    )
                )
                bar.update(hi - lo)

    write_atomically(path, write)
