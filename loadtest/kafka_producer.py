"""An event producer: a generated shop's events into a Kafka topic, as fast as possible or at a rate.

    python -m loadtest.kafka_producer --shop DIR --bootstrap HOST:PORT --topic aisle.events [--limit N]

Records are what any producer sends: the protobuf `Event`, keyed by user id. Events are read and
serialized before the clock starts; the producer is aiokafka's, idempotent with `acks=all`, and
every record is acknowledged before the figure is printed (as JSON on the last line of stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import uvloop
from aiokafka import AIOKafkaProducer

from trainer.data.generated import read_events

WINDOW = 20_000  # records in flight before waiting for their acknowledgements


def load(shop: Path, limit: int) -> list[tuple[bytes, bytes]]:
    records = []
    for event in read_events(shop):
        records.append((event.user_id.encode(), event.SerializeToString()))
        if len(records) >= limit:
            break
    return records


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        request_timeout_ms=60_000,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending = []
        send = producer.send
        for n, (key, value) in enumerate(records):
            pending.append(await send(topic, value, key=key))
            if len(pending) >= WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
            if rate and n % 100 == 0:
                ahead = started + n / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.kafka_producer", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--shop", type=Path, required=True, help="a generated shop (python -m trainer generate)"
    )
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", default="aisle.events")
    parser.add_argument("--limit", type=int, default=10**9)
    parser.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    args = parser.parse_args()
    records = load(args.shop, args.limit)
    print(f"producing {len(records):,} events", flush=True)
    seconds = uvloop.run(produce(args.bootstrap, args.topic, records, args.rate))
    print(
        json.dumps({"events": len(records), "seconds": seconds, "events_per_s": len(records) / seconds}),
        flush=True,
    )


if __name__ == "__main__":
    main()
