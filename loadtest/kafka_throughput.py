"""Ingestion through Kafka into Redis: events per second that one feature worker process folds.

    make services    # a Kafka broker and a Redis, addresses in .services.env
    python -m loadtest.kafka_throughput --shop DIR [--events N] [--mode drain|live] [--workers N] [--profile]

Topics, a consumer group and a Redis database (`--redis-db`, flushed) of the run's own. The shop's
catalog goes to the items topic first; then:

- `drain`: the producer process (`loadtest.kafka_producer`) writes N events, then one worker process
  starts and folds the backlog: the worker's rate, nothing else competing for the CPU;
- `live`: the worker runs, then the producer process writes N events as fast as it can, while the
  worker folds them: producer, broker, worker and Redis share the machine.

`--workers N` runs N worker processes in the one consumer group (they share the partitions; CPU per
event is theirs together). The rate is read from the group's committed offsets (the worker commits only after Redis holds a
batch): events / seconds from the first to the last commit, and the median of one-second windows.
`--profile` runs the worker under cProfile and prints where its time went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from feature_worker.lag import LagProbe
from feature_worker.topics import Topics, create_topics
from loadtest import redis_target
from loadtest.harness.worker import WorkerProcess
from trainer.data.generated import read_items, read_meta

ROOT = Path(__file__).resolve().parent.parent


async def produce_catalog(bootstrap: str, topic: str, shop: Path) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, i.SerializeToString(), key=i.item_id.encode())
            for i in read_items(shop)
        ]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def producer_process(shop: Path, bootstrap: str, topic: str, events: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtest.kafka_producer",
            "--shop",
            str(shop),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--limit",
            str(events),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def producer_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"producer failed:\n{out}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def follow(probe: LagProbe, total: int, timeout_s: float) -> list[tuple[float, int]]:
    """(time, committed) samples every 0.1 s until `total` events are committed."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        done = sum((await probe.committed()).values())
        samples.append((time.monotonic(), done))
        if done >= total:
            return samples
        if time.monotonic() > deadline:
            sys.exit(f"timed out: {done:,} of {total:,} committed")
        await asyncio.sleep(0.1)


def rates(samples: list[tuple[float, int]], total: int) -> dict[str, float]:
    first = next(t for t, done in samples if done > 0)
    last = next(t for t, done in samples if done >= total)
    windows = []
    start_t, start_n = samples[0]
    for t, n in samples:
        if t - start_t >= 1.0:
            if start_n > 0 and n < total:  # whole windows inside the run
                windows.append((n - start_n) / (t - start_t))
            start_t, start_n = t, n
    return {
        "events_per_s": total / max(last - first, 1e-9),
        "median_1s_window": statistics.median(windows) if windows else float("nan"),
        "seconds": last - first,
    }


async def run(args: argparse.Namespace) -> None:
    bootstrap = args.bootstrap or os.environ.get("AISLE_KAFKA_BOOTSTRAP", "")
    base_url = args.redis_url or os.environ.get("AISLE_REDIS_URL", "")
    if not bootstrap or not base_url:
        sys.exit("set AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL (make services; source .services.env)")
    redis_url, cluster = redis_target.run_database(base_url, args.redis_db)
    nodes = redis_target.primaries(redis_url, cluster)
    redis_target.flush(nodes, cluster)
    total = min(args.events, read_meta(args.shop)["events"])
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"bench{tag}", args.partitions)
    await create_topics(bootstrap, topics.specs())
    items = await produce_catalog(bootstrap, topics.items, args.shop)
    print(
        f"{items:,} items in {topics.items}; {total:,} events to {topics.events} ({args.partitions} partitions)"
    )
    env = {
        "AISLE_KAFKA_BOOTSTRAP": bootstrap,
        "AISLE_REDIS_URL": redis_url,
        "AISLE_TOPIC_PREFIX": topics.prefix,
        "AISLE_EVENT_PARTITIONS": str(args.partitions),
        "AISLE_GROUP_ID": f"bench-{tag}",
        "AISLE_BATCH_MAX": str(args.batch_max),
        "AISLE_LOG_EVERY_S": "5",
    }
    workdir = Path(tempfile.mkdtemp(prefix="aisle-bench-"))
    profile = workdir / "worker.prof" if args.profile else None
    workers = [
        WorkerProcess(workdir / f"worker{n}", env=env, profile=profile if n == 0 else None)
        for n in range(args.workers)
    ]
    probe = LagProbe(bootstrap, f"bench-{tag}", topics.events)

    def start_workers() -> tuple[list[int], float]:
        """Start the workers one by one; their pids and CPU seconds so far, each read once it is ready."""
        pids, cpu = [], 0.0
        for worker in workers:
            worker.start()
            assert worker.proc is not None
            pids.append(worker.proc.pid)
            cpu += cpu_seconds(worker.proc.pid)  # start-up (the catalog) is not the fold's
        return pids, cpu

    try:
        if args.mode == "drain":
            produced = producer_result(producer_process(args.shop, bootstrap, topics.events, total))
            print(f"producer: {produced['events_per_s']:,.0f} events/s (backlog written)")
            redis0 = redis_target.cpu_seconds(nodes)
            pids, cpu0 = start_workers()
            await probe.start()
            samples = await follow(probe, total, args.timeout)
        else:
            pids, cpu0 = start_workers()
            redis0 = redis_target.cpu_seconds(nodes)
            await probe.start()
            proc = producer_process(args.shop, bootstrap, topics.events, total)
            samples = await follow(probe, total, args.timeout)
            produced = producer_result(proc)
            print(f"producer: {produced['events_per_s']:,.0f} events/s (concurrently)")
        worker_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        redis_cpu = redis_target.cpu_seconds(nodes) - redis0
        print(
            f"CPU per event: worker{'s' if len(pids) > 1 else ''} {worker_cpu / total * 1e6:.1f} us, "
            f"Redis {redis_cpu / total * 1e6:.1f} us (a core each: at most "
            f"{total / max(worker_cpu / len(pids), redis_cpu):,.0f} events/s)"
        )
        figures = rates(samples, total)
        print(
            f"{len(pids)} worker{'s' if len(pids) > 1 else ''} ({args.mode}): {total:,} events in "
            f"{figures['seconds']:.1f} s = {figures['events_per_s']:,.0f} events/s "
            f"(median 1-s window {figures['median_1s_window']:,.0f}/s), batch_max {args.batch_max}"
        )
        if not cluster:
            with redis.Redis.from_url(redis_url) as r:
                print(f"redis: {r.dbsize():,} keys, used_memory {r.info('memory')['used_memory_human']}")
    finally:
        for worker in workers:
            worker.stop()
        await probe.close()
        print(f"worker logs: {', '.join(str(w.log_path) for w in workers)}")
    if profile is not None and profile.exists():
        stats = pstats.Stats(str(profile))
        stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.kafka_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--mode", choices=["drain", "live"], default="drain")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the group")
    parser.add_argument("--batch-max", type=int, default=2000)
    parser.add_argument("--bootstrap", help="default: $AISLE_KAFKA_BOOTSTRAP")
    parser.add_argument(
        "--redis-url",
        help="default: $AISLE_REDIS_URL (the database number is replaced; a Redis "
        "Cluster node: the whole Cluster is the run's, and flushed)",
    )
    parser.add_argument("--redis-db", type=int, default=14, help="database of the run; flushed first")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--profile", action="store_true", help="run the worker under cProfile")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
