"""`python -m clients export --segment ...`: every customer of a segment with their recommendations, as JSON lines
or CSV, for e-mail campaigns and batch jobs, from one server-streaming call (SegmentService.ExportRecommendations).

Segment terms (repeat `--segment`; every term must hold):

    KEY=VALUE          the customer's attribute KEY is VALUE         --segment loyalty_tier=gold
    active_days:N      an event within the last N days               --segment active_days:30
    min_events:N       at least N events                             --segment min_events:5
    category:PATH      has interacted with PATH or below             --segment category:beauty/skin
    buyers             has bought something                          --segment buyers

Rows: JSON lines `{"user_id", "recommendation_id", "personalized", "items": [{"item_id", "score", "reasons"}]}`, or CSV
`user_id,recommendation_id,personalized,item_1..item_k`. Customers without consent to personalization get the
non-personalized list (`personalized` false) unless `--consented-only` leaves them out.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import grpc

from clients.client import AisleClient
from protos.aisle.v1 import segments_pb2, segments_pb2_grpc


class SegmentSyntaxError(ValueError):
    """A `--segment` term that is not one of the forms above."""


def parse_segment(terms: Iterable[str]) -> segments_pb2.Segment:
    """The Segment message for `--segment` terms (see the module's table)."""
    segment = segments_pb2.Segment()
    for term in terms:
        name, colon, value = term.partition(":")
        if term == "buyers":
            segment.buyers_only = True
        elif colon and name in ("active_days", "min_events") and "=" not in name:
            if not value.isdigit():
                raise SegmentSyntaxError(f"{term!r}: {name} takes a whole number")
            if name == "active_days":
                segment.active_within_days = int(value)
            else:
                segment.min_events = int(value)
        elif colon and name == "category":
            segment.category = value
        elif "=" in term:
            key, _, wanted = term.partition("=")
            if not key:
                raise SegmentSyntaxError(f"{term!r}: an attribute needs a name")
            segment.attributes[key] = wanted
        else:
            raise SegmentSyntaxError(
                f"{term!r}: expected KEY=VALUE, active_days:N, min_events:N, category:PATH or buyers"
            )
    return segment


@dataclass
class Summary:
    """What an export wrote."""

    customers: int = 0
    scanned: int = 0
    total: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else 0.0


def stream(
    client: AisleClient, request: segments_pb2.ExportRecommendationsRequest, timeout_s: float | None = None
) -> Iterator[segments_pb2.ExportRecommendationsResponse]:
    """The export's chunks as the server streams them (the client's token and TLS settings apply)."""
    stub = segments_pb2_grpc.SegmentServiceStub(client.channel)
    yield from stub.ExportRecommendations(request, timeout=timeout_s, metadata=client.options.metadata())


def write(
    chunks: Iterable[segments_pb2.ExportRecommendationsResponse], out: IO[str], fmt: str, k: int
) -> Summary:
    """Write every customer of `chunks` to `out` as `fmt` ("jsonl" or "csv"); returns what was written."""
    summary = Summary()
    started = time.perf_counter()
    writer: Any = None
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["user_id", "recommendation_id", "personalized", *(f"item_{n}" for n in range(1, k + 1))]
        )
    for chunk in chunks:
        for row in chunk.customers:
            if writer is not None:
                ids = [item.item_id for item in row.items][:k]
                writer.writerow(
                    [
                        row.user_id,
                        row.recommendation_id,
                        str(row.personalized).lower(),
                        *ids,
                        *([""] * (k - len(ids))),
                    ]
                )
            else:
                items = [
                    {"item_id": i.item_id, "score": round(float(i.score), 6), "reasons": list(i.reasons)}
                    for i in row.items
                ]
                out.write(
                    json.dumps(
                        {
                            "user_id": row.user_id,
                            "recommendation_id": row.recommendation_id,
                            "personalized": row.personalized,
                            "items": items,
                        },
                        ensure_ascii=False,
                    )
                )
                out.write("\n")
        summary.customers += len(chunk.customers)
        summary.scanned, summary.total = chunk.scanned, chunk.total
    summary.seconds = time.perf_counter() - started
    return summary


def run(
    client: AisleClient,
    terms: list[str],
    k: int,
    fmt: str,
    out: IO[str],
    explain: bool = False,
    consented_only: bool = False,
    category_prefix: str = "",
    max_per_category: int = 0,
) -> int:
    """The `export --segment` command: stream, write, report on stderr; the exit status."""
    try:
        segment = parse_segment(terms)
    except SegmentSyntaxError as error:
        print(f"--segment {error}", file=sys.stderr)
        return 2
    request = segments_pb2.ExportRecommendationsRequest(
        segment=segment,
        k=k,
        explain=explain,
        consented_only=consented_only,
        category_prefix=category_prefix,
        max_per_category=max_per_category,
    )
    try:
        summary = write(stream(client, request), out, fmt, k)
    except grpc.RpcError as error:
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(
        f"exported {summary.customers:,} customers ({summary.scanned:,} of {summary.total:,} scanned) in "
        f"{summary.seconds:.1f} s: {summary.per_second:,.0f} customers/s",
        file=sys.stderr,
    )
    return 0
