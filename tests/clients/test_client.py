"""The client library and CLI against a real server."""

from __future__ import annotations

import json

import grpc
import pytest

from clients.__main__ import main as cli
from clients.client import AisleClient, AsyncAisleClient, ClientOptions
from loadtest.harness.server import ServerProcess
from protos.aisle.v1 import catalog_pb2
from tests.shop import BASE_TS, Shop, item, unique, view


async def test_async_client_round_trip(server: ServerProcess) -> None:
    shop = Shop()
    async with AsyncAisleClient(ClientOptions(target=server.target, read_timeout_s=10)) as client:
        assert await client.upsert_items([item(shop.id(name)) for name in "abcde"]) == 5
        user = unique("u")
        response = await client.track([view(user, shop.id("a"), BASE_TS)])
        assert response.accepted == 1
        assert (await client.get_item(shop.id("b"))).item_id == shop.id("b")
        assert (await client.profile(user)).events_applied == 1
        answer = await client.recommend(user, 3)
        assert len(answer.items) == 3 and shop.id("a") not in [i.item_id for i in answer.items]
        assert len((await client.similar_items(shop.id("a"), 2)).items) == 2
        assert await client.delete_items([shop.id("b"), shop.id("nope")]) == 1
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.get_item(shop.id("b"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_cli_tracks_and_recommends(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    shop = Shop()
    _upsert(server, [item(shop.id(name)) for name in "abcde"])
    user = unique("cli")
    assert (
        cli(["--target", server.target, "track", "--user", user, "--type", "VIEW", "--item", shop.id("a")])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["accepted"] == 1
    assert cli(["--target", server.target, "recommend", "--user", user, "-k", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 3
    assert cli(["--target", server.target, "profile", "--user", user]) == 0
    assert json.loads(capsys.readouterr().out)["eventsApplied"] == "1"


def _upsert(server: ServerProcess, items: list[catalog_pb2.Item]) -> None:
    with AisleClient(ClientOptions(target=server.target)) as client:
        client.upsert_items(items)


def test_cli_reports_invalid_argument(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["--target", server.target, "recommend", "--user", "u", "-k", "500"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_retries_unavailable_until_the_deadline() -> None:
    options = ClientOptions(target="127.0.0.1:1", read_timeout_s=0.5)
    with AisleClient(options) as client, pytest.raises(grpc.RpcError) as error:
        client.recommend("u", 3)
    assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
