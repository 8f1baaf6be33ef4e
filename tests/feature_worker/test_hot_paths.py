"""The worker's fast paths agree with the plain code they stand in for."""

from __future__ import annotations

import math
import random

from redis.asyncio.connection import Connection

from feature_worker.stores.bounds import heaviest
from feature_worker.stores.redis import _packing_in_c
from feature_worker.validation import _event_problems, _plainly_valid, validate_event
from protos.aisle.v1 import events_pb2
from tests.shop import BASE_TS

IDS = ["", "a", "u1", "x" * 128, "x" * 129, "a\x00b", "é", "\u200b", "tab\t", "ok-id"]


def test_the_validation_fast_path_only_accepts_events_with_no_problems() -> None:
    rng = random.Random(3)
    taken = 0
    for _ in range(20_000):
        event = events_pb2.Event(
            event_id=rng.choice(IDS),
            user_id=rng.choice(IDS),
            session_id=rng.choice(IDS),
            item_id=rng.choice(IDS),
            recommendation_id=rng.choice(IDS),
            type=events_pb2.EventType.ValueType(rng.randrange(8)),
            ts_ms=rng.choice([0, BASE_TS, BASE_TS + 3_600_000, BASE_TS + 3_600_001, -1]),
            price=rng.choice([0.0, -0.0, 1.5, -1.0, 1e9, 1e9 + 1, math.inf, math.nan]),
            quantity=rng.choice([0, 1, -1, 100_000, 100_001]),
            query=rng.choice(["", "q", "q" * 1025]),
        )
        if rng.random() < 0.1:
            event.item_ids.extend(rng.sample(IDS, 2))
        if rng.random() < 0.1:
            event.context[rng.choice(IDS)] = rng.choice(["v", "v" * 1025])
        if _plainly_valid(event, BASE_TS):
            taken += 1
            assert _event_problems(event, BASE_TS) == []
        assert validate_event(event, BASE_TS) == _event_problems(event, BASE_TS)
    assert taken > 50  # the fast path was exercised


def test_commands_packed_by_hiredis_are_the_bytes_redis_py_sends() -> None:
    fast, plain = _packing_in_c(Connection)(), Connection()
    for args in [
        ("EVALSHA", "abc", 0, "x", b"\x00\xff", 12, "é"),
        ("MGET", *[f"u1{{u{i}}}" for i in range(5)]),
        ("CLIENT SETINFO", "LIB-NAME", "x"),
        ("SET", "a", 1.5),
        ("GET", b"k"),
    ]:
        assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_heaviest_ranks_as_a_sort_by_weight_then_id_does() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        size = rng.randrange(0, 300)
        # Few distinct weights: most lists have ties at the cut, which is what the fast path must get right.
        weights = [
            rng.choice([0.25, 1.0, 2.0, 3.0]) if rng.random() < 0.7 else rng.random() for _ in range(size)
        ]
        pairs = {f"item-{rng.randrange(10_000):05d}": w for w in weights}
        n = rng.choice([0, 1, 5, 50, 200, 400])
        expected = sorted(pairs.items(), key=lambda pair: (-pair[1], pair[0]))[:n]
        assert heaviest(pairs.items(), n) == expected
        assert heaviest(list(pairs.items()), n) == expected
