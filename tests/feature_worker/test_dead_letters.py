"""Reading records into events: protobuf and JSON, and every way a record can be refused."""

from __future__ import annotations

import json

from aiokafka import ConsumerRecord, TopicPartition

from feature_worker.codec import decode
from feature_worker.dead_letters import REASON, events_of
from feature_worker.errors import InvalidArgument
from protos.aisle.v1 import catalog_pb2, events_pb2
from tests.shop import BASE_TS, view

TP = TopicPartition("aisle.events", 0)


def record(
    offset: int, key: bytes | None, value: bytes | None, timestamp: int = BASE_TS
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TP.topic,
        partition=0,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=[("trace", b"t1")],
    )


def test_json_and_protobuf_forms_decode_to_the_same_event() -> None:
    event = view("u1", "i1", BASE_TS, event_id="e1")
    as_json = json.dumps(
        {"eventId": "e1", "type": "VIEW", "userId": "u1", "itemId": "i1", "tsMs": str(BASE_TS)}
    )
    assert decode(event.SerializeToString(), events_pb2.Event) == event
    assert decode(as_json.encode(), events_pb2.Event) == event
    assert decode(b"  \n" + as_json.encode(), events_pb2.Event) == event


def test_undecodable_values_name_the_problem() -> None:
    for value in (b"\xff\xff\xff", b'{"event_id": 3}', b'{"nope": 1}', b"{not json"):
        try:
            decode(value, events_pb2.Event)
        except InvalidArgument as exc:
            assert exc.violations[0][0] == "value"
        else:
            raise AssertionError(f"{value!r} decoded")


def test_events_of_keeps_the_good_and_dead_letters_the_rest_with_reasons() -> None:
    good = view("u1", "i1", BASE_TS, event_id="e1")
    stamped_later = events_pb2.Event(event_id="e2", type=events_pb2.VIEW, user_id="u1", item_id="i2")
    records = [
        record(0, b"u1", good.SerializeToString()),
        record(1, b"u1", b"garbage \xff"),
        record(2, b"u1", None),
        record(3, b"u1", catalog_pb2.Item(item_id="i1").SerializeToString()),
        record(4, b"u2", good.SerializeToString()),
        record(5, b"u1", b"x" * 100),
        record(6, b"u1", stamped_later.SerializeToString(), timestamp=BASE_TS + 5),
    ]
    events, dead = events_of({TP: records}, max_bytes=64)
    assert [e.event_id for e in events] == ["e1", "e2"]
    assert events[1].ts_ms == BASE_TS + 5, "ts_ms 0 takes the record's timestamp"
    reasons = {d.record.offset: d.reason for d in dead}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "not a protobuf Event" in reasons[1]
    assert reasons[2] == "value: is empty"
    assert "user_id: is required" in reasons[3]
    assert reasons[4].startswith("key:")
    assert "limit is 64 bytes" in reasons[5]
    headers = dict(dead[0].headers())
    assert headers["trace"] == b"t1" and headers[REASON] and headers["aisle.dlq.offset"] == b"1"
