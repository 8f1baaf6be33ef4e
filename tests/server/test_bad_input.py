"""Bad input over a real channel: only INVALID_ARGUMENT (or success, or NOT_FOUND for lookups), never
INTERNAL or UNKNOWN; and the good events of a mixed batch are all applied."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.client import AisleClient, ClientOptions
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import catalog_pb2, events_pb2, recommendations_pb2, users_pb2
from tests.shop import BASE_TS, unique, view

R = TypeVar("R")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
TEXT = st.one_of(st.text(max_size=40), st.text(min_size=120, max_size=300), st.just(""), st.just("\x00\n\t"))
IDS = st.lists(TEXT, max_size=5)
MAPS = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)

events = st.builds(
    events_pb2.Event,
    event_id=TEXT,
    type=st.integers(min_value=-3, max_value=12),
    user_id=TEXT,
    session_id=TEXT,
    item_id=TEXT,
    item_ids=IDS,
    ts_ms=INT64,
    price=FLOATS,
    quantity=INT32,
    query=TEXT,
    context=MAPS,
    recommendation_id=TEXT,
)
items = st.builds(
    catalog_pb2.Item,
    item_id=TEXT,
    title=TEXT,
    description=TEXT,
    category=TEXT,
    brand=TEXT,
    price=FLOATS,
    in_stock=st.booleans(),
    attributes=MAPS,
)


@pytest.fixture(scope="module")
def fuzz_client(server: ServerProcess) -> Iterator[AisleClient]:
    with AisleClient(ClientOptions(target=server.target, read_timeout_s=10, write_timeout_s=30)) as c:
        yield c


def call(fn: Callable[..., R], *args: object, allowed: tuple[grpc.StatusCode, ...] = ()) -> R | None:
    try:
        return fn(*args)
    except grpc.RpcError as error:
        code = error.code()
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, *allowed), f"{code}: {error.details()}"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            # The RpcError a call raises is also the call (a grpc.Call), which the stubs do not say.
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            assert status is not None and status.details, "INVALID_ARGUMENT without field details"
            bad = error_details_pb2.BadRequest()
            status.details[0].Unpack(bad)
            assert bad.field_violations and all(v.field and v.description for v in bad.field_violations)
        return None


@FUZZ
@given(batch=st.lists(events, max_size=6))
def test_track_fuzz(fuzz_client: AisleClient, batch: list[events_pb2.Event]) -> None:
    response = call(fuzz_client.track, batch)
    if response is not None:
        assert isinstance(response, events_pb2.TrackResponse)
        rejected = {r.index for r in response.rejected}
        assert response.accepted + len(rejected) == len(batch)
        assert all(r.field and r.reason for r in response.rejected)


@FUZZ
@given(user_id=TEXT, k=INT32, context=TEXT, exclude=IDS, prefix=TEXT, explain=st.booleans())
def test_recommend_fuzz(
    fuzz_client: AisleClient,
    user_id: str,
    k: int,
    context: str,
    exclude: list[str],
    prefix: str,
    explain: bool,
) -> None:
    request = recommendations_pb2.RecommendRequest(
        user_id=user_id,
        k=k,
        context_item_id=context,
        exclude_item_ids=exclude,
        category_prefix=prefix,
        explain=explain,
    )
    response = call(fuzz_client.recs.Recommend, request)
    if response is not None:
        assert len(response.items) <= (k or 10)


@FUZZ
@given(item_id=TEXT, k=INT32, exclude=IDS, prefix=TEXT)
def test_similar_items_fuzz(
    fuzz_client: AisleClient, item_id: str, k: int, exclude: list[str], prefix: str
) -> None:
    request = recommendations_pb2.SimilarItemsRequest(
        item_id=item_id, k=k, exclude_item_ids=exclude, category_prefix=prefix
    )
    call(fuzz_client.recs.SimilarItems, request)


@FUZZ
@given(batch=st.lists(items, max_size=4))
def test_catalog_fuzz(fuzz_client: AisleClient, batch: list[catalog_pb2.Item]) -> None:
    call(fuzz_client.upsert_items, batch)
    for item in batch:
        call(fuzz_client.get_item, item.item_id, allowed=(grpc.StatusCode.NOT_FOUND,))
    call(fuzz_client.delete_items, [i.item_id for i in batch])


@FUZZ
@given(user_id=TEXT, attributes=MAPS, consent=st.booleans())
def test_users_fuzz(
    fuzz_client: AisleClient, user_id: str, attributes: dict[str, str], consent: bool
) -> None:
    user = users_pb2.User(
        user_id=user_id, attributes=attributes, consent=users_pb2.Consent(personalization=consent)
    )
    call(fuzz_client.upsert_user, user)
    call(fuzz_client.profile, user_id)
    call(fuzz_client.export_user, user_id)
    call(fuzz_client.erase_user, user_id)


def test_mixed_batch_keeps_every_good_event(fuzz_client: AisleClient) -> None:
    users = [unique("u") for _ in range(5)]
    good = [view(u, unique("item"), BASE_TS + i) for i, u in enumerate(users)]
    bad = [
        events_pb2.Event(event_id="", type=events_pb2.VIEW, user_id="x", item_id="i"),
        events_pb2.Event(event_id="b1", type=events_pb2.EVENT_TYPE_UNSPECIFIED, user_id="x", item_id="i"),
        events_pb2.Event(event_id="b2", type=events_pb2.VIEW, user_id="x" * 500, item_id="i"),
        events_pb2.Event(
            event_id="b3", type=events_pb2.PURCHASE, user_id="x", item_id="i", price=float("nan")
        ),
        events_pb2.Event(event_id="b4", type=events_pb2.VIEW, user_id="x", item_id="i", ts_ms=2**62),
    ]
    batch = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], good[4], bad[4]]
    response = fuzz_client.track(batch)
    assert response.accepted == 5
    assert sorted({r.index for r in response.rejected}) == [1, 3, 5, 7, 9]
    fields = {r.index: r.field for r in response.rejected}
    assert fields == {1: "event_id", 3: "type", 5: "user_id", 7: "price", 9: "ts_ms"}
    for user in users:
        assert fuzz_client.profile(user).events_applied == 1


def test_batch_size_limits(fuzz_client: AisleClient) -> None:
    assert call(fuzz_client.track, []) is None
    too_many = [view(unique("u"), "i", BASE_TS) for _ in range(1001)]
    assert call(fuzz_client.track, too_many) is None
    assert call(fuzz_client.recommend, "u", 201) is None


def test_oversized_and_undecodable_requests_are_invalid_argument(server: ServerProcess) -> None:
    with grpc.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/aisle.v1.EventService/Track", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as garbage:
            raw(b"\xff\xff\xff\xff garbage", timeout=10)
        assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        big = events_pb2.TrackRequest(events=[view("u", "i", BASE_TS, query="q" * 1000)] * 5000)
        with pytest.raises(grpc.RpcError) as oversized:
            raw(big.SerializeToString(), timeout=30)
        assert oversized.value.code() == grpc.StatusCode.INVALID_ARGUMENT
