"""The HTTP/JSON gateway against a real gRPC server that requires JWTs, over real sockets.

Each answer is checked against the gRPC API's own answer for the same state, so the tests hold the gateway to
"the same API, in JSON": same items, same auth decisions, the same error details.
"""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import pytest

from clients.client import AisleClient
from clients.tokens import PrivateKey, mint
from loadtest.harness.gateway import GatewayProcess
from protos.aisle.v1 import events_pb2
from tests.http_json import call
from tests.server.gateway.conftest import ALLOWED_ORIGIN
from tests.shop import BASE_TS, Shop, item, unique, view


@pytest.fixture(scope="module")
def shop(admin: AisleClient) -> Shop:
    """Items a..d; another customer viewed a then b, so b is co-viewed with a."""
    shop = Shop()
    admin.upsert_items([item(shop.id(name)) for name in "abcd"])
    other = unique("other")
    admin.track([view(other, shop.id("a")), view(other, shop.id("b"), ts_ms=BASE_TS + 1000)])
    return shop


@pytest.fixture(scope="module")
def partner(key: PrivateKey) -> str:
    return mint(key, ["events:write", "recommendations:read", "catalog:read"], subject="web-partner")


def test_track_then_recommend_matches_grpc(
    gateway: GatewayProcess, admin: AisleClient, shop: Shop, partner: str
) -> None:
    user = unique("web")
    events = [
        {
            "eventId": unique("e"),
            "type": "VIEW",
            "userId": user,
            "itemId": shop.id("a"),
            "tsMs": str(BASE_TS + 5000),
        },
        {
            "event_id": unique("e"),
            "type": 2,
            "user_id": user,
            "item_id": shop.id("c"),
            "ts_ms": BASE_TS + 6000,
        },
    ]
    tracked = call(gateway.port, "POST", "/v1/events:track", {"events": events}, partner)
    assert tracked.status == 200, tracked.body
    assert tracked.body == {"accepted": 2, "rejected": [], "duplicates": 0}
    assert [(i.type, i.item_id) for i in admin.profile(user).recent] == [
        (events_pb2.CLICK, shop.id("c")),
        (events_pb2.VIEW, shop.id("a")),
    ]

    answer = call(gateway.port, "GET", f"/v1/users/{user}/recommendations?k=3&explain=true", token=partner)
    assert answer.status == 200, answer.body
    expected = admin.recommend(user, k=3, explain=True)
    assert [i["itemId"] for i in answer.body["items"]] == [i.item_id for i in expected.items]
    assert shop.id("b") in [i["itemId"] for i in answer.body["items"]]
    assert all(i["reasons"] for i in answer.body["items"])
    assert answer.body["recommendationId"] and answer.body["modelVersion"] == expected.model_version

    posted = call(
        gateway.port,
        "POST",
        f"/v1/users/{user}/recommendations",
        {"k": 3, "excludeItemIds": [shop.id("b")]},
        partner,
    )
    assert posted.status == 200, posted.body
    assert [i["itemId"] for i in posted.body["items"]] == [
        i.item_id for i in admin.recommend(user, k=3, exclude_item_ids=[shop.id("b")]).items
    ]

    repeated = call(
        gateway.port,
        "GET",
        f"/v1/users/{user}/recommendations?k=3&exclude_item_ids={shop.id('b')}&exclude_item_ids={shop.id('d')}",
        token=partner,
    )
    assert {shop.id("b"), shop.id("d")}.isdisjoint(i["itemId"] for i in repeated.body["items"])

    again = call(gateway.port, "POST", "/v1/events:track", {"events": events[:1]}, partner)
    assert again.body["duplicates"] == 1


def test_path_variables_are_percent_decoded(gateway: GatewayProcess, key: PrivateKey, shop: Shop) -> None:
    token = mint(key, ["catalog:read", "catalog:write"])
    odd = f"{shop.prefix}-a/b c:d"
    upserted = call(
        gateway.port,
        "POST",
        "/v1/items:upsert",
        {"items": [{"itemId": odd, "title": "Odd", "category": "x/y", "price": 2.5, "inStock": True}]},
        token,
    )
    assert upserted.status == 200 and upserted.body == {"upserted": 1}
    got = call(gateway.port, "GET", f"/v1/items/{quote(odd, safe='')}", token=token)
    assert got.status == 200, got.body
    assert got.body["itemId"] == odd and got.body["price"] == 2.5 and got.body["inStock"] is True


def test_user_resource_routes(gateway: GatewayProcess, key: PrivateKey, admin: AisleClient) -> None:
    user = unique("someone")
    token = mint(key, ["users:read", "users:write", "privacy"])
    put = call(
        gateway.port,
        "PUT",
        f"/v1/users/{user}",
        {"attributes": {"tier": "gold"}, "consent": {"personalization": True}},
        token,
    )
    assert put.status == 200, put.body
    assert admin.profile(user).user.attributes["tier"] == "gold"
    profile = call(gateway.port, "GET", f"/v1/users/{user}/profile", token=token)
    assert profile.status == 200 and profile.body["user"]["attributes"] == {"tier": "gold"}
    exported = call(gateway.port, "GET", f"/v1/users/{user}:export", token=token)
    assert exported.status == 200 and json.loads(exported.body["json"])["user_id"] == user
    erased = call(gateway.port, "DELETE", f"/v1/users/{user}", token=token)
    assert erased.status == 200 and erased.body["userId"] == user and erased.body["receiptId"]
    assert not admin.profile(user).user.attributes


def test_grpc_errors_become_http_statuses_with_details(
    gateway: GatewayProcess, key: PrivateKey, shop: Shop, partner: str
) -> None:
    user = unique("web")
    anonymous = call(gateway.port, "GET", f"/v1/users/{user}/recommendations")
    assert anonymous.status == 401 and anonymous.body["code"] == 16
    assert anonymous.headers["www-authenticate"] == "Bearer"

    no_scope = call(
        gateway.port, "GET", f"/v1/users/{user}/recommendations", token=mint(key, ["events:write"])
    )
    assert no_scope.status == 403 and no_scope.body["code"] == 7

    other_user = mint(key, ["recommendations:read"], user=unique("someone-else"))
    assert call(gateway.port, "GET", f"/v1/users/{user}/recommendations", token=other_user).status == 403
    own_user = mint(key, ["recommendations:read"], user=user)
    assert call(gateway.port, "GET", f"/v1/users/{user}/recommendations", token=own_user).status == 200

    too_many = call(gateway.port, "GET", f"/v1/users/{user}/recommendations?k=1000", token=partner)
    assert too_many.status == 400 and too_many.body["code"] == 3
    assert [field for field, _ in too_many.violations()] == ["k"]
    assert "must be from 1 to 200" in too_many.violations()[0][1]

    missing = call(gateway.port, "GET", f"/v1/items/{shop.id('nope')}", token=partner)
    assert missing.status == 404 and missing.body["code"] == 5

    too_long = call(
        gateway.port,
        "POST",
        "/v1/events:track",
        {"events": [{"eventId": "e", "type": "VIEW", "userId": "x" * 200, "itemId": "i"}]},
        partner,
    )
    assert too_long.status == 200 and too_long.body["accepted"] == 0
    assert too_long.body["rejected"][0]["field"] == "user_id"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/v1/users/u1/recommendations?k=abc", None, "k"),
        ("GET", "/v1/users/u1/recommendations?explain=maybe", None, "explain"),
        ("GET", "/v1/users/u1/recommendations?k=1&k=2", None, "k"),
        ("GET", "/v1/users/u1/recommendations?colour=red", None, "colour"),
        ("GET", "/v1/users/u1/recommendations?user_id=u2", None, "user_id"),
        ("POST", "/v1/events:track", b"{not json", "body"),
        ("POST", "/v1/events:track", b'{"events": [{"nope": 1}]}', "body"),
        ("POST", "/v1/events:track", b'{"events": [{"type": "JUMP"}]}', "body"),
        ("POST", "/v1/events:track", b"\xff\xfe", "body"),
    ],
)
def test_unreadable_requests_are_invalid_argument(
    gateway: GatewayProcess, partner: str, method: str, path: str, body: bytes | None, field: str
) -> None:
    answer = call(gateway.port, method, path, token=partner, raw=body)
    assert answer.status == 400 and answer.body["code"] == 3, answer.body
    assert [f for f, _ in answer.violations()] == [field]


def test_unknown_paths_and_methods(gateway: GatewayProcess, partner: str) -> None:
    assert call(gateway.port, "GET", "/v1/nothing/here", token=partner).status == 404
    wrong = call(gateway.port, "DELETE", "/v1/events:track", token=partner)
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"


def test_too_large_bodies_are_refused(gateway: GatewayProcess, partner: str) -> None:
    answer = call(gateway.port, "POST", "/v1/events:track", token=partner, raw=b" " * (4 * 1024 * 1024 + 1))
    assert answer.status == 413 and [f for f, _ in answer.violations()] == ["body"]


def test_cors_allows_the_configured_origin_only(gateway: GatewayProcess, partner: str) -> None:
    preflight = {
        "Origin": ALLOWED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = call(gateway.port, "OPTIONS", "/v1/events:track", headers=preflight)
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = call(
        gateway.port, "OPTIONS", "/v1/events:track", headers={**preflight, "Origin": "http://evil.test"}
    )
    assert refused.status == 400 and "access-control-allow-origin" not in refused.headers

    simple = call(
        gateway.port, "GET", "/v1/users/u1/recommendations", token=partner, headers={"Origin": ALLOWED_ORIGIN}
    )
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    other = call(
        gateway.port,
        "GET",
        "/v1/users/u1/recommendations",
        token=partner,
        headers={"Origin": "http://evil.test"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_openapi_document_covers_every_route(gateway: GatewayProcess) -> None:
    served = call(gateway.port, "GET", "/openapi.json")
    assert served.status == 200
    document = served.body
    operations = {(path, verb) for path, item in document["paths"].items() for verb in item}
    assert ("/v1/users/{user_id}/recommendations", "get") in operations
    assert ("/v1/users/{user_id}/recommendations", "post") in operations
    assert ("/v1/events:track", "post") in operations
    assert len(operations) == 11
    for path, path_item in document["paths"].items():
        for verb, operation in path_item.items():
            assert operation["description"], (path, verb)  # the .proto comments
    refs = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].removeprefix("#/components/schemas/"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs <= set(document["components"]["schemas"])
    event = document["components"]["schemas"]["aisle.v1.Event"]["properties"]
    assert event["tsMs"]["type"] == "string" and event["tsMs"]["format"] == "int64"
    assert "Idempotency key" in event["eventId"]["description"]

    printed = subprocess.run(
        [sys.executable, "-m", "server.gateway", "openapi"], capture_output=True, text=True, check=True
    )
    assert json.loads(printed.stdout) == document
