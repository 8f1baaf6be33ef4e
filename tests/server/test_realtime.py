"""Real-time behaviour end to end over a real gRPC channel: the next answer reflects the last event.

Runs against both modes: the embedded server, and Kafka + Redis with a feature worker (there, the
client's `track` returns once the worker has folded the events: see `tests.kafka_stack`)."""

from __future__ import annotations

import pytest

from clients.client import AisleClient
from protos.aisle.v1 import events_pb2
from tests.modes import SERVER_MODES
from tests.shop import BASE_TS, Shop, event, item, unique, view

pytestmark = pytest.mark.parametrize("server_mode", SERVER_MODES, indirect=True)

MIN = 60_000


def seed_co_views(client: AisleClient, shop: Shop, pairs: list[tuple[str, str]], users: int = 3) -> None:
    """Several other customers view each pair (a, b) together, so b is co-viewed with a."""
    events = []
    for n in range(users):
        other = unique("other")
        for i, (a, b) in enumerate(pairs):
            events += [
                view(other, shop.id(a), BASE_TS + i * 10 * MIN),
                view(other, shop.id(b), BASE_TS + i * 10 * MIN + MIN),
            ]
    assert client.track(events).accepted == len(events)


def make_catalog(client: AisleClient, shop: Shop) -> None:
    items = [item(shop.id(f"x{i}"), category=shop.category("skin/cream"), brand="b1") for i in range(6)]
    items += [item(shop.id(f"y{i}"), category=shop.category("hair/shampoo"), brand="b2") for i in range(6)]
    client.upsert_items(items)


def test_viewing_an_item_brings_its_co_viewed_items(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    seed_co_views(client, shop, [("x1", "y3"), ("x1", "y4")])
    user = unique("u")
    before = [i.item_id for i in client.recommend(user, 5).items]
    assert shop.id("y3") not in before[:2]

    client.track([view(user, shop.id("x1"), BASE_TS + 100 * MIN)])
    response = client.recommend(user, 5, explain=True)
    top = {i.item_id: list(i.reasons) for i in response.items}
    assert shop.id("y3") in top and shop.id("y4") in top
    assert f"co_viewed_with:{shop.id('x1')}" in top[shop.id("y3")]
    assert response.recommendation_id and response.model_version


def test_a_bought_item_is_gone_from_the_next_answer(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    seed_co_views(client, shop, [("x1", "x2"), ("x1", "x3")])
    user = unique("u")
    client.track([view(user, shop.id("x1"), BASE_TS + 100 * MIN)])
    assert shop.id("x2") in [i.item_id for i in client.recommend(user, 5).items]

    client.track(
        [event(user, events_pb2.PURCHASE, shop.id("x2"), BASE_TS + 101 * MIN, price=5.0, quantity=1)]
    )
    assert shop.id("x2") not in [i.item_id for i in client.recommend(user, 50).items]


def test_an_out_of_stock_item_never_appears_for_anyone(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    seed_co_views(client, shop, [("x1", "x2")], users=5)
    viewer = unique("u")
    client.track([view(viewer, shop.id("x1"), BASE_TS + 100 * MIN)])
    assert shop.id("x2") in [i.item_id for i in client.recommend(viewer, 5).items]

    client.upsert_items(
        [item(shop.id("x2"), category=shop.category("skin/cream"), brand="b1", in_stock=False)]
    )
    for user in (viewer, unique("stranger"), ""):
        answer = client.recommend(user, 200, context_item_id=shop.id("x1"))
        assert shop.id("x2") not in [i.item_id for i in answer.items]
    assert shop.id("x2") not in [i.item_id for i in client.similar_items(shop.id("x1"), 200).items]


def test_rules_exclude_filter_and_backfill(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    seed_co_views(client, shop, [("x1", "x2"), ("x1", "y1")])
    user = unique("u")
    client.track([view(user, shop.id("x1"), BASE_TS + 100 * MIN)])

    excluded = client.recommend(user, 10, exclude_item_ids=[shop.id("x2")])
    assert shop.id("x2") not in [i.item_id for i in excluded.items]

    hair = client.recommend(user, 6, category_prefix=shop.category("hair"))
    assert [i.item_id for i in hair.items] and all(i.item_id.startswith(shop.id("y")) for i in hair.items)
    # Backfill: six hair items exist and are in stock, so the list is full even without signals.
    assert len(hair.items) == 6
    assert len({i.item_id for i in hair.items}) == 6
    scores = [i.score for i in hair.items]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_non_personalized_answer(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    answer = client.recommend(unique("never-seen"), 10)
    assert len(answer.items) == 10
    profile = client.profile(unique("never-seen"))
    assert not profile.known


def test_profile_reflects_events(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    user = unique("u")
    x1, x2 = shop.id("x1"), shop.id("x2")
    client.track(
        [
            view(user, x1, BASE_TS),
            event(user, events_pb2.ADD_TO_CART, x1, BASE_TS + MIN),
            event(user, events_pb2.ADD_TO_CART, x2, BASE_TS + 2 * MIN),
            event(user, events_pb2.PURCHASE, x1, BASE_TS + 3 * MIN, price=20.0, quantity=2),
        ]
    )
    profile = client.profile(user)
    assert profile.known and profile.events_applied == 4
    assert [i.item_id for i in profile.recent][:2] == [x1, x2]
    assert list(profile.cart_item_ids) == [x2]
    assert list(profile.purchased_item_ids) == [x1]
    assert profile.loyalty.purchases == 1 and profile.loyalty.monetary == 40.0
    assert 0 < profile.loyalty.score <= 1
    assert profile.category_affinities[0].key == shop.category("skin/cream") or profile.category_affinities[
        0
    ].key.startswith(shop.prefix)
    assert profile.brand_affinities[0].key == "b1"


def test_duplicates_apply_once(client: AisleClient) -> None:
    shop = Shop()
    make_catalog(client, shop)
    user = unique("u")
    once = view(user, shop.id("x1"), BASE_TS)
    first = client.track([once, once])
    assert first.accepted == 2 and first.duplicates == 1
    assert client.track([once]).duplicates == 1
    assert client.profile(user).events_applied == 1


def test_consent_withdrawn_means_no_personalization(client: AisleClient) -> None:
    from protos.aisle.v1 import users_pb2

    shop = Shop()
    make_catalog(client, shop)
    seed_co_views(client, shop, [("x1", "y5")], users=5)
    user = unique("u")
    client.track([view(user, shop.id("x1"), BASE_TS + 100 * MIN)])
    assert shop.id("y5") in [i.item_id for i in client.recommend(user, 5).items]
    client.upsert_user(users_pb2.User(user_id=user, consent=users_pb2.Consent(personalization=False)))
    answer = client.recommend(user, 5, explain=True)
    assert all(not r.startswith("co_viewed_with") for i in answer.items for r in i.reasons)
