"""The batch store's cost: events per second the Kafka sink appends, and what it adds to embedded Track.

    python -m loadtest.sink_throughput --shop DIR [--events N] [--mode kafka|embedded]

`kafka` (default): the run's own topics get the shop's catalog and N events (`loadtest.kafka_producer`),
then one sink process (`python -m feature_worker sink`) starts on an empty lake and drains the backlog; the
rate is N over the seconds from the sink being ready to the Delta commit that records the last offset (read
from the tables' recorded offsets every 0.1 s), with the sink's CPU per event. Uses the broker of
`AISLE_KAFKA_BOOTSTRAP`, or starts one of its own (`loadtest.harness.services`) when that is unset.

`embedded`: the same N events sent with `Track` (100 per call, one connection) to an embedded server
without a lake, then to one with `AISLE_LAKE_DIR`; prints each one's calls per second, p50/p99 latency and
server CPU per event, and the rows that reached the lake once the server stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from deltalake import DeltaTable

from feature_worker.lake.schema import EVENTS
from feature_worker.lake.writer import table_uri
from feature_worker.topics import Topics, create_topics
from loadtest.harness.worker import sink_process
from loadtest.kafka_throughput import cpu_seconds, produce_catalog, producer_process, producer_result
from trainer.data.generated import read_events, read_meta


def recorded(lake: Path, topics: Topics) -> int:
    """Offsets recorded in the events table, summed over the partitions (= events appended, from offset 0)."""
    try:
        table = DeltaTable(table_uri(lake, EVENTS))
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return sum(
        table.transaction_version(f"kafka:{topics.events}:{p}") or 0 for p in range(topics.event_partitions)
    )


async def run_kafka(args: argparse.Namespace) -> None:
    bootstrap = args.bootstrap or os.environ.get("AISLE_KAFKA_BOOTSTRAP", "")
    broker = None
    workdir = Path(tempfile.mkdtemp(prefix="aisle-sink-bench-"))
    if not bootstrap:
        from loadtest.harness.services.kafka import KafkaService

        broker = KafkaService(workdir / "kafka", die_with_parent=True)
        broker.start()
        bootstrap = broker.bootstrap
    try:
        total = min(args.events, read_meta(args.shop)["events"])
        tag = uuid.uuid4().hex[:8]
        topics = Topics(f"sinkbench{tag}", args.partitions)
        await create_topics(bootstrap, topics.specs())
        items = await produce_catalog(bootstrap, topics.items, args.shop)
        produced = producer_result(producer_process(args.shop, bootstrap, topics.events, total))
        print(
            f"{items:,} items; {total:,} events to {topics.events} ({args.partitions} partitions) at "
            f"{produced['events_per_s']:,.0f}/s"
        )
        lake = workdir / "lake"
        sink = sink_process(
            workdir / "sink",
            env={
                "AISLE_KAFKA_BOOTSTRAP": bootstrap,
                "AISLE_TOPIC_PREFIX": topics.prefix,
                "AISLE_EVENT_PARTITIONS": str(args.partitions),
                "AISLE_SINK_GROUP_ID": f"sinkbench-{tag}",
                "AISLE_LAKE_DIR": str(lake),
                "AISLE_SINK_BATCH_MAX": str(args.batch_max),
                "AISLE_ENCRYPTION": "off",
                "AISLE_SINK_FLUSH_S": str(args.flush_s),
            },
        )
        try:
            sink.start()
            assert sink.proc is not None
            started, cpu0 = time.monotonic(), cpu_seconds(sink.proc.pid)
            deadline = started + args.timeout
            while (done := recorded(lake, topics)) < total:
                if time.monotonic() > deadline or not sink.running():
                    sys.exit(f"timed out: {done:,} of {total:,} recorded\n{sink.log_tail()}")
                await asyncio.sleep(0.1)
            seconds = time.monotonic() - started
            cpu = cpu_seconds(sink.proc.pid) - cpu0
        finally:
            sink.stop()
        table = DeltaTable(table_uri(lake, EVENTS))
        files = table.file_uris()
        size = sum(Path(f).stat().st_size for f in files)
        print(
            f"sink: {total:,} events in {seconds:.1f} s = {total / seconds:,.0f} events/s "
            f"(batch_max {args.batch_max}); CPU {cpu / total * 1e6:.1f} us/event; "
            f"{table.count():,} rows, version {table.version()}, {len(files)} files, {size / total:.0f} B/event"
        )
    finally:
        if broker is not None:
            broker.stop()


def run_embedded(args: argparse.Namespace) -> None:
    from clients.client import AisleClient, ClientOptions
    from loadtest.harness.server import ServerProcess

    events = []
    for event in read_events(args.shop):
        events.append(event)
        if len(events) >= args.events:
            break
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    workdir = Path(tempfile.mkdtemp(prefix="aisle-lake-track-"))
    for label, env in (("no lake", {}), ("lake", {"AISLE_LAKE_DIR": str(workdir / "lake")})):
        server = ServerProcess(workdir / label.replace(" ", "-"), env=env).start()
        try:
            assert server.proc is not None
            with AisleClient(ClientOptions(target=server.target, write_timeout_s=30)) as client:
                for batch in batches[:20]:  # warm-up (journaled and landed too)
                    client.track(batch)
                cpu0, started, latencies = cpu_seconds(server.proc.pid), time.perf_counter(), []
                for batch in batches[20:]:
                    t = time.perf_counter()
                    client.track(batch)
                    latencies.append(time.perf_counter() - t)
                seconds, cpu = time.perf_counter() - started, cpu_seconds(server.proc.pid) - cpu0
        finally:
            server.stop()
        sent = sum(len(b) for b in batches[20:])
        latencies.sort()
        print(
            f"{label:8s}: {len(latencies) / seconds:,.0f} Track/s ({sent / seconds:,.0f} events/s), "
            f"p50 {statistics.median(latencies) * 1e3:.2f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms, "
            f"server CPU {cpu / sent * 1e6:.1f} us/event"
        )
    rows = DeltaTable(table_uri(workdir / "lake", EVENTS)).count()
    print(f"lake: {rows:,} event rows (of {len(events):,} sent)")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.sink_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--mode", choices=["kafka", "embedded"], default="kafka")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-max", type=int, default=50_000)
    parser.add_argument("--flush-s", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="default: $AISLE_KAFKA_BOOTSTRAP, else a broker of the run's own")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    if args.mode == "embedded":
        run_embedded(args)
    else:
        asyncio.run(run_kafka(args))


if __name__ == "__main__":
    main()
