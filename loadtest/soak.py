"""A bounded soak of the Kafka + Redis mode, with crashes: `python -m loadtest.soak [--duration-s 600]`.

Runs a server and a feature worker (`python -m server`, `python -m feature_worker`, encryption on as by default)
on the Kafka broker named by `AISLE_KAFKA_BOOTSTRAP` (or `--env-file .services.env`, from `make services`) and on a
Redis of its own (Debian's `redis-server`, AOF with `appendfsync always`, Aisle's production setting), and drives
mixed traffic for `--duration-s` seconds:

- Recommend at a fixed rate (`--recommend-rate`, open loop: a call is sent on schedule whether or not the previous
  ones have answered), for random users of the shop;
- Track from `--producers` producers (`--track-rate` events/s in all, batches of 10, each user's events from one
  producer, in order; a failed call is sent again until it succeeds: events carry their ids, so that is safe);
- catalog updates every `--catalog-every-s`: prices and stock of existing items, and new items that the producers
  use once their upsert is acknowledged (categories and brands never change, so the fold does not depend on when
  the worker learns of an update).

Along the way the worker is SIGKILLed and restarted at 25 % and 75 % of the run, and Redis is restarted (SIGTERM,
then started again on its AOF) at 50 %. Then the traffic stops, the worker catches up, and the soak checks:

1. no Recommend failed outside the restart windows (from the disruption until `--grace-s` after the process is back;
   a call in flight at any moment of a window counts as inside it);
2. no event lost or applied twice: every user's features in Redis equal those of the embedded fold replaying the
   same events (the same function `tests/feature_worker/test_worker.py` uses: features, applied counts, item
   counters, the co-visitation of every item whose neighbours never reached their cap, which each store trims at
   its own batch boundaries), and the applied counts add up to the number of distinct events;
3. the memory (RSS) of Aisle's processes is flat after warm-up: for the server and each incarnation of the worker,
   the mean RSS of the last tenth of its life is within `--rss-growth` (10 %, plus 8 MiB) of the mean of the tenth
   after its warm-up (the first 20 % of its life). Redis's is reported beside its dataset, which grows with the
   events (applied ids are kept per user up to 2,000, new neighbours), not judged.

Prints the figures and exits 1 if a check fails. Leaves nothing running (the broker is not its own).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc
import redis

from clients.client import AsyncAisleClient, ClientOptions
from feature_worker import keys
from feature_worker.apply import apply_events
from feature_worker.catalog import Catalog
from feature_worker.lag import LagProbe
from feature_worker.privacy.keystores.redis import RedisKeyStore
from feature_worker.privacy.sealing import MasterKey
from feature_worker.privacy.vault import Vault
from feature_worker.stores.memory import MemoryFeatureStore
from feature_worker.stores.redis_cluster import redis_store_from_url
from feature_worker.topics import Topics
from loadtest.harness.children import DEV_MASTER_KEY
from loadtest.harness.server import ServerProcess
from loadtest.harness.worker import WorkerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2

TYPES = [events_pb2.VIEW] * 6 + [
    events_pb2.CLICK,
    events_pb2.ADD_TO_CART,
    events_pb2.REMOVE_FROM_CART,
    events_pb2.PURCHASE,
]
CATEGORIES = [f"dept{d}/cat{c}" for d in range(6) for c in range(5)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisProcess:
    """Debian's `redis-server` with AOF (`appendfsync always`) in `workdir`, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start; see " + str(self.workdir / "redis.log"))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@dataclass
class Disruption:
    what: str
    started: float
    ended: float = math.inf


@dataclass
class Soak:
    """The run's processes, traffic and records."""

    args: argparse.Namespace
    workdir: Path
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    events: list[events_pb2.Event] = field(default_factory=list)
    items: dict[str, catalog_pb2.Item] = field(default_factory=dict)
    usable: list[str] = field(default_factory=list)
    #: (sent, answered, status code) of every Recommend, in seconds of the run.
    recommends: list[tuple[float, float, str]] = field(default_factory=list)
    capped: tuple[int, int] = (0, 0)
    track_retries: int = 0
    disruptions: list[Disruption] = field(default_factory=list)
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.topics = Topics(f"soak{tag}")
        self.group = f"soak-workers-{tag}"
        self.redis = RedisProcess(self.workdir / "redis")
        self.env = {
            "AISLE_KAFKA_BOOTSTRAP": self.args.bootstrap,
            "AISLE_REDIS_URL": self.redis.url,
            "AISLE_TOPIC_PREFIX": self.topics.prefix,
            "AISLE_GROUP_ID": self.group,
            "AISLE_LOG_EVERY_S": "30",
        }
        self.server = ServerProcess(self.workdir / "server", env=self.env, args=["--lists-refresh-s", "1"])
        self.worker = WorkerProcess(self.workdir / "worker", env=self.env)
        self.worker_incarnation = self.redis_incarnation = 0
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- traffic ---------------------------------------------------------------------------------------
    async def recommend_loop(self, client: AsyncAisleClient) -> None:
        interval = 1.0 / self.args.recommend_rate
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not self.stopping.is_set():
            user = f"u{self.rng.randrange(self.args.users)}"
            task = asyncio.create_task(self._recommend(client, user))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)

    async def _recommend(self, client: AsyncAisleClient, user: str) -> None:
        sent = self.now()
        try:
            await client.recommend(user, k=10)
            self.recommends.append((sent, self.now(), "OK"))
        except grpc.aio.AioRpcError as exc:
            self.recommends.append((sent, self.now(), exc.code().name))

    async def producer(self, client: AsyncAisleClient, index: int) -> None:
        """Batches of 10 events of this producer's users, at its share of `--track-rate`."""
        rng = random.Random(100 + index)
        mine = [f"u{n}" for n in range(index, self.args.users, self.args.producers)]
        interval = 10 * self.args.producers / self.args.track_rate
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            batch = []
            for _ in range(10):
                now_ms = int(time.time() * 1000)
                batch.append(
                    events_pb2.Event(
                        event_id=f"p{index}-{n}",
                        type=rng.choice(TYPES),
                        user_id=rng.choice(mine),
                        item_id=rng.choice(self.usable),
                        ts_ms=now_ms - (rng.randrange(300_000) if rng.random() < 0.05 else 0),
                        price=rng.choice([4.0, 12.5, 30.0]),
                        quantity=1,
                    )
                )
                n += 1
            while True:
                try:
                    await client.track(batch)
                    break
                except grpc.aio.AioRpcError:
                    self.track_retries += 1
                    await asyncio.sleep(0.2)
            self.events += batch
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def catalog_loop(self, client: AsyncAisleClient) -> None:
        new = 0
        while not self.stopping.is_set():
            await asyncio.sleep(self.args.catalog_every_s)
            changed = []
            for item_id in self.rng.sample(sorted(self.items), min(20, len(self.items))):
                item = catalog_pb2.Item()
                item.CopyFrom(self.items[item_id])
                item.price = round(self.rng.uniform(2, 60), 2)
                item.in_stock = self.rng.random() > 0.05
                changed.append(item)
            added = [self._item(f"n{new + i}") for i in range(2)]
            new += 2
            while True:
                try:
                    await client.upsert_items(changed + added)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)
            for item in changed + added:
                self.items[item.item_id] = item
            self.usable += [item.item_id for item in added]  # events may name them once acknowledged

    def _item(self, item_id: str) -> catalog_pb2.Item:
        n = int(item_id.lstrip("in") or 0)
        return catalog_pb2.Item(
            item_id=item_id,
            category=CATEGORIES[n % len(CATEGORIES)],
            brand=f"brand{n % 9}",
            price=round(self.rng.uniform(2, 60), 2),
            in_stock=True,
        )

    # -- chaos -----------------------------------------------------------------------------------------
    async def chaos(self) -> None:
        duration = self.args.duration_s
        for at, what in ((0.25, "worker"), (0.5, "redis"), (0.75, "worker")):
            await asyncio.sleep(max(0.0, self.t0 + at * duration - time.monotonic()))
            disruption = Disruption(f"{what} {'SIGKILL' if what == 'worker' else 'restart'}", self.now())
            self.disruptions.append(disruption)
            if what == "worker":
                await asyncio.to_thread(self.worker.stop, signal.SIGKILL, 10)
                await asyncio.to_thread(self.worker.start, 120)
                self.worker_incarnation += 1
            else:
                await asyncio.to_thread(self.redis.stop)
                await asyncio.to_thread(self.redis.start)
                self.redis_incarnation += 1
            disruption.ended = self.now() + self.args.grace_s
            print(
                f"  {self.now():6.1f} s  {disruption.what}: back after {self.now() - disruption.started:.1f} s",
                flush=True,
            )

    async def sample_rss(self) -> None:
        while not self.stopping.is_set():
            for name, proc in (
                ("server", self.server.proc),
                (f"worker#{self.worker_incarnation}", self.worker.proc),
                (f"redis#{self.redis_incarnation}", self.redis.proc),
            ):
                if proc is not None and proc.poll() is None:
                    rss = _rss(proc.pid)
                    if rss:
                        self.rss[name].append((self.now(), rss))
            await asyncio.sleep(2.0)

    # -- the run ---------------------------------------------------------------------------------------
    async def run(self) -> int:
        args = self.args
        self.redis.start()
        await asyncio.to_thread(self.server.start, 120)
        await asyncio.to_thread(self.worker.start, 120)
        options = ClientOptions(target=self.server.target, read_timeout_s=5.0, write_timeout_s=10.0)
        async with AsyncAisleClient(options) as client:
            self.items = {i.item_id: i for i in (self._item(f"i{n}") for n in range(args.items))}
            catalog = list(self.items.values())
            for start in range(0, len(catalog), 1000):  # UpsertItems takes 1 to 1,000 items
                await client.upsert_items(catalog[start : start + 1000])
            self.usable = sorted(self.items)
            print(
                f"soak: {args.duration_s:.0f} s, Recommend {args.recommend_rate}/s, Track {args.track_rate} "
                f"events/s from {args.producers} producers, {args.users:,} users, {args.items} items; "
                f"workdir {self.workdir}",
                flush=True,
            )
            self.t0 = time.monotonic()
            tasks = [
                asyncio.create_task(self.recommend_loop(client)),
                asyncio.create_task(self.catalog_loop(client)),
                asyncio.create_task(self.sample_rss()),
                *(asyncio.create_task(self.producer(client, i)) for i in range(args.producers)),
            ]
            chaos = asyncio.create_task(self.chaos())
            await asyncio.sleep(args.duration_s)
            await chaos
            self.stopping.set()
            await asyncio.gather(*tasks)
        probe = LagProbe(args.bootstrap, self.group, self.topics.events)
        await probe.start()
        try:
            await probe.wait_caught_up(300)
        finally:
            await probe.close()
        return await self.report()

    async def report(self) -> int:
        failed = 0

        # 1. Recommend failures outside the windows: a call counts as inside one when it was in flight during it.
        def in_window(sent: float, done: float) -> bool:
            return any(sent <= d.ended and done >= d.started for d in self.disruptions)

        outside = [
            (sent, code) for sent, done, code in self.recommends if code != "OK" and not in_window(sent, done)
        ]
        failed_all = sum(1 for *_, code in self.recommends if code != "OK")
        ok = len(self.recommends) - failed_all
        lat = sorted(
            done - sent for sent, done, code in self.recommends if code == "OK" and not in_window(sent, done)
        )
        print(
            f"Recommend: {len(self.recommends):,} sent, {ok:,} OK, {failed_all - len(outside)} failed in flight during a "
            f"restart window, {len(outside)} outside; latency outside the windows p50 {1000 * lat[len(lat) // 2]:.1f} ms, "
            f"p99 {1000 * lat[int(len(lat) * 0.99)]:.1f} ms"
        )
        for d in self.disruptions:
            print(f"  window {d.what}: {d.started:.1f} s to {d.ended:.1f} s")
        if outside:
            failed += 1
            print(f"  FAIL: failures outside the windows, e.g. {outside[:5]}")
        # 2. Redis equals the embedded replay.
        distinct = len({(e.user_id, e.event_id) for e in self.events})
        print(f"Track: {len(self.events):,} events acknowledged ({self.track_retries} calls sent again)")
        problems = await self.compare()
        if problems:
            failed += 1
            print("  FAIL: " + "; ".join(problems))
        else:
            capped, items = self.capped
            print(
                f"  Redis equals the embedded replay of the same {distinct:,} events: none lost, none applied twice "
                f"(features of every user, applied counts, popularity, trending, the co-visitation of {items - capped:,} "
                f"of {items:,} items; {capped} reached the cap of neighbours)"
            )
        # 3. RSS flat after warm-up.
        print("RSS (MiB): after warm-up -> at the end")
        for name, samples in self.rss.items():
            growth = _growth(samples)
            if growth is None:
                print(f"  {name}: too short to judge ({len(samples)} samples)")
                continue
            start, end = growth
            flat = end <= start * (1 + self.args.rss_growth) + 8 * 2**20
            if name.startswith("redis"):
                # Redis holds the data, which grows with every event (applied ids, up to 2,000 per user; new
                # neighbours): its RSS is reported beside the dataset, not judged.
                print(f"  {name}: {start / 2**20:,.1f} -> {end / 2**20:,.1f} (the data it holds grows)")
                continue
            print(f"  {name}: {start / 2**20:,.1f} -> {end / 2**20:,.1f} ({'flat' if flat else 'GROWING'})")
            if not flat:
                failed += 1
        with redis.Redis.from_url(self.redis.url) as client:
            memory = client.info("memory")
            print(
                f"  redis at the end: used_memory {memory['used_memory'] / 2**20:,.1f} MiB (dataset "
                f"{memory['used_memory_dataset'] / 2**20:,.1f} MiB), {client.dbsize():,} keys"
            )
        print("PASS" if not failed else "FAIL")
        return 0 if not failed else 1

    async def compare(self) -> list[str]:
        catalog = Catalog()
        catalog.upsert_many(self.items.values())
        expected = MemoryFeatureStore()
        for start in range(0, len(self.events), 500):
            await apply_events(expected, catalog, self.events[start : start + 500])
        store = redis_store_from_url(self.redis.url)
        store.vault = Vault(MasterKey.load(DEV_MASTER_KEY), RedisKeyStore(store.client))
        problems = []
        try:
            users = await store.load_users(list(expected.features.users))
            wrong = [u for u, state in expected.features.users.items() if users[u] != state]
            if wrong:
                problems.append(f"{len(wrong)} users differ, e.g. {wrong[0]}")
            applied = sum(s.events_applied for s in users.values())
            distinct = len({(e.user_id, e.event_id) for e in self.events})
            if applied != distinct:
                problems.append(f"{applied} events applied, {distinct} sent")
            stats, want = await store.item_stats(), expected.features.item_stats()
            for name, got, wanted in (
                ("popularity", stats.popularity, want.popularity),
                ("trending", stats.trending, want.trending),
            ):
                off = [i for i in wanted if not math.isclose(got.get(i, 0.0), wanted[i], rel_tol=1e-9)]
                if off or got.keys() != wanted.keys():
                    problems.append(f"{name} of {off[:3]} differs")
            # A neighbour set that reached its cap was trimmed, by each store at its own batch boundaries (and
            # Redis breaks ties the other way): only sets that never did compare exactly. One with fewer than
            # `covis_cap` neighbours in the replay never reached it there, nor in Redis (which has the same ones).
            capped = 0
            for item_id, neighbours in expected.features.covis.items():
                if len(neighbours) >= keys.KeyPolicy().covis_cap:
                    capped += 1
                    continue
                raw = await store.client.zrange(keys.covis(item_id), 0, -1, withscores=True)
                # redis-py types the reply as any of zrange's shapes; withscores=True is (member, score) pairs.
                if {k.decode(): v for k, v in cast(list[tuple[bytes, float]], raw)} != neighbours:
                    problems.append(f"co-visitation of {item_id} differs")
                    break
            self.capped = (capped, len(expected.features.covis))
        finally:
            await store.close()
        return problems

    def stop_all(self) -> None:
        self.worker.stop()
        self.server.stop()
        self.redis.stop()


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _growth(samples: list[tuple[float, int]]) -> tuple[float, float] | None:
    """Mean RSS of the tenth of a life after its warm-up (its first 20 %), and of its last tenth."""
    if len(samples) < 20:
        return None
    n = len(samples)
    after_warmup = [rss for _, rss in samples[n // 5 : n // 5 + max(1, n // 10)]]
    last = [rss for _, rss in samples[-max(1, n // 10) :]]
    return statistics.fmean(after_warmup), statistics.fmean(last)


def _bootstrap(env_file: Path | None) -> str:
    if env_file is not None:
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "AISLE_KAFKA_BOOTSTRAP":
                return value.strip()
    return os.environ.get("AISLE_KAFKA_BOOTSTRAP", "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration-s", type=float, default=600.0, help="how long the traffic runs (default 10 min)"
    )
    parser.add_argument("--env-file", type=Path, help="where AISLE_KAFKA_BOOTSTRAP is (e.g. .services.env)")
    parser.add_argument("--recommend-rate", type=float, default=20.0, help="Recommend calls per second")
    parser.add_argument("--track-rate", type=float, default=100.0, help="events per second, all producers")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--catalog-every-s", type=float, default=5.0)
    parser.add_argument(
        "--grace-s", type=float, default=3.0, help="a restart window ends this long after the restart"
    )
    parser.add_argument("--rss-growth", type=float, default=0.10, help="allowed RSS growth after warm-up")
    args = parser.parse_args()
    args.bootstrap = _bootstrap(args.env_file)
    if not args.bootstrap:
        sys.exit("set AISLE_KAFKA_BOOTSTRAP or pass --env-file (make services writes .services.env)")
    with tempfile.TemporaryDirectory(prefix="aisle-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            code = asyncio.run(soak.run())
        finally:
            soak.stop_all()
    sys.exit(code)


if __name__ == "__main__":
    main()
