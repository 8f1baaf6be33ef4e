"""CPU per Recommend as server processes are added: `python -m loadtest.scale_out --shop DIR --servers 1 2 4`.

    make services    # a Kafka broker and a Redis (CLUSTER=1: a Redis Cluster), addresses in .services.env
    python -m loadtest.scale_out --shop .bench/shop100k --env-file .services.env --servers 1 2 4

On topics and a Redis database of the run's own (database `--redis-db`, flushed; on a Cluster, every node
flushed), the shop's catalog and its first `--warm-events` events are produced and folded by one feature worker,
so that users have features. Then, for each count N of `--servers`, a Kafka + Redis server with N processes
(`python -m server --workers N`, one port shared with SO_REUSEPORT) answers Recommend for `--seconds` at a fixed
total rate (`--rate`, open loop, from `4 N` client channels so that connections spread over the processes), and the
run reads the CPU time that the server's processes (the supervisor and its workers) and Redis spent meanwhile:
CPU per Recommend, which is what stays flat (or not) as processes are added. Each row first measures the
processes idle for `--idle-seconds` (each refreshes the shop-wide lists every second: a fixed cost per process),
and also gives the CPU per Recommend net of it. The events side is
`loadtest.kafka_throughput --workers N` (CPU per event with N workers in one group).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from clients.client import AsyncAisleClient, ClientOptions
from feature_worker.lag import LagProbe
from feature_worker.topics import Topics, create_topics
from loadtest import redis_target
from loadtest.harness.server import ServerProcess
from loadtest.harness.worker import WorkerProcess
from loadtest.kafka_throughput import cpu_seconds, produce_catalog, producer_process, producer_result
from trainer.data.generated import read_meta, read_users


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


async def drive(
    target: str, users: list[str], rate: float, seconds: float, channels: int
) -> tuple[int, int, list[float]]:
    """Open-loop Recommend at `rate`/s for `seconds` over `channels` channels: (OK, failed, latencies)."""
    clients = [AsyncAisleClient(ClientOptions(target=target, read_timeout_s=5.0)) for _ in range(channels)]
    rng = random.Random(3)
    ok = failed = 0
    latencies: list[float] = []

    async def one(client: AsyncAisleClient, user: str) -> None:
        nonlocal ok, failed
        started = time.perf_counter()
        try:
            await client.recommend(user, k=10, explain=True)
            ok += 1
            latencies.append(time.perf_counter() - started)
        except grpc.aio.AioRpcError:
            failed += 1

    tasks = set()
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        task = asyncio.create_task(one(clients[n % channels], rng.choice(users)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    for client in clients:
        await client.close()
    return ok, failed, latencies


async def run(args: argparse.Namespace) -> None:
    bootstrap, base_url = args.bootstrap, args.redis_url
    redis_url, cluster = redis_target.run_database(base_url, args.redis_db)
    nodes = redis_target.primaries(redis_url, cluster)
    redis_target.flush(nodes, cluster)
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"scale{tag}", args.partitions)
    await create_topics(bootstrap, topics.specs())
    await produce_catalog(bootstrap, topics.items, args.shop)
    total = min(args.warm_events, read_meta(args.shop)["events"])
    producer_result(producer_process(args.shop, bootstrap, topics.events, total))
    env = {
        "AISLE_KAFKA_BOOTSTRAP": bootstrap,
        "AISLE_REDIS_URL": redis_url,
        "AISLE_TOPIC_PREFIX": topics.prefix,
        "AISLE_EVENT_PARTITIONS": str(args.partitions),
        "AISLE_GROUP_ID": f"scale-{tag}",
        "AISLE_LOG_EVERY_S": "30",
    }
    workdir = Path(tempfile.mkdtemp(prefix="aisle-scale-"))
    worker = WorkerProcess(workdir / "worker", env=env).start(120)
    probe = LagProbe(bootstrap, f"scale-{tag}", topics.events)
    await probe.start()
    await probe.wait_caught_up(900)
    await probe.close()
    worker.stop()
    users = [u.user_id for u in read_users(args.shop)]
    print(
        f"{total:,} events folded into {'a Redis Cluster of ' + str(len(nodes)) if cluster else 'one Redis'}; "
        f"Recommend at {args.rate:.0f}/s for {args.seconds:.0f} s per row (k=10, explain)"
    )
    print(
        "| server processes | idle server CPU (cores) | Recommend OK/s | failed | server CPU per Recommend "
        "(net of idle) | Redis CPU per Recommend | server CPU used (cores) | p50 | p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.servers:
        server = ServerProcess(
            workdir / f"server{n}", env=env, workers=n, args=["--lists-refresh-s", "1"]
        ).start(180)
        try:
            assert server.proc is not None
            await drive(server.target, users, args.rate, 5.0, 4 * n)  # warm-up: caches, lists, connections
            pids = process_tree(server.proc.pid)
            # Idle: what the processes spend with no request (each refreshes the shop-wide lists every second).
            idle0, i0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            idle = (sum(cpu_seconds(p) for p in pids) - idle0) / (time.monotonic() - i0)
            cpu0, redis0, t0 = (
                sum(cpu_seconds(p) for p in pids),
                redis_target.cpu_seconds(nodes),
                time.monotonic(),
            )
            ok, failed, latencies = await drive(server.target, users, args.rate, args.seconds, 4 * n)
            elapsed = time.monotonic() - t0
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            rcpu = redis_target.cpu_seconds(nodes) - redis0
            lat = sorted(latencies)
            net = (cpu - idle * elapsed) / max(ok, 1)
            print(
                f"| {n} | {idle:.3f} | {ok / elapsed:,.0f} | {failed} | {cpu / max(ok, 1) * 1000:.2f} ms "
                f"({net * 1000:.2f} ms) | "
                f"{rcpu / max(ok, 1) * 1e6:.0f} µs | {cpu / elapsed:.2f} | {1000 * statistics.median(lat):.1f} ms | "
                f"{1000 * lat[int(len(lat) * 0.99)]:.1f} ms |",
                flush=True,
            )
        finally:
            server.stop()


def _from_env_file(path: Path | None, name: str) -> str:
    if path is not None:
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == name:
                return value.strip()
    return os.environ.get(name, "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.scale_out", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument(
        "--env-file", type=Path, help="AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL (.services.env)"
    )
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4], help="server process counts")
    parser.add_argument("--rate", type=float, default=100.0, help="Recommend calls per second, in all")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per row")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="idle seconds measured per row first"
    )
    parser.add_argument("--warm-events", type=int, default=100_000, help="events folded before measuring")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--redis-db", type=int, default=13, help="database of the run on one Redis; flushed")
    args = parser.parse_args()
    args.bootstrap = _from_env_file(args.env_file, "AISLE_KAFKA_BOOTSTRAP")
    args.redis_url = _from_env_file(args.env_file, "AISLE_REDIS_URL")
    if not args.bootstrap or not args.redis_url:
        sys.exit("set AISLE_KAFKA_BOOTSTRAP and AISLE_REDIS_URL or pass --env-file (make services)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
