"""Locust scenario: shoppers who browse (Track) and look at recommendations (Recommend).

    .venv/bin/pip install -e '.[loadtest]'
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -r 5 -t 60s --host 127.0.0.1:50051

Each simulated shopper picks a user of a generated shop (AISLE_SHOP_USERS, default 100000: ids u1..uN)
and items (AISLE_SHOP_ITEMS, default 20000: ids i1..iN), then loops: ask for recommendations, view
one of them, sometimes add it to the cart. gRPC runs on gevent so locust's users share one process.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task

from protos.aisle.v1 import events_pb2, events_pb2_grpc, recommendations_pb2, recommendations_pb2_grpc

grpc_gevent.init_gevent()

USERS = int(os.environ.get("AISLE_SHOP_USERS", "100000"))
ITEMS = int(os.environ.get("AISLE_SHOP_ITEMS", "20000"))


def timed(name: str, call: Any, request: Any) -> Any:
    """Call a stub method and report it to locust's statistics."""
    started = time.perf_counter()
    response, exception = None, None
    try:
        response = call(request, timeout=5)
    except grpc.RpcError as error:
        exception = error
    events.request.fire(
        request_type="grpc",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=response.ByteSize() if response is not None else 0,
        exception=exception,
        context=None,
    )
    return response


class Shopper(User):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.host)
        self.recs = recommendations_pb2_grpc.RecommendationServiceStub(self.channel)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.user_id = f"u{random.randint(1, USERS)}"

    def on_stop(self) -> None:
        self.channel.close()

    def _track(self, etype: events_pb2.EventType.ValueType, item_id: str) -> None:
        event = events_pb2.Event(
            event_id=uuid.uuid4().hex,
            type=etype,
            user_id=self.user_id,
            item_id=item_id,
        )
        timed("Track", self.events.Track, events_pb2.TrackRequest(events=[event]))

    @task(3)
    def browse(self) -> None:
        request = recommendations_pb2.RecommendRequest(user_id=self.user_id, k=10, explain=True)
        response = timed("Recommend", self.recs.Recommend, request)
        if response is not None and response.items:
            choice = random.choice(response.items).item_id
            self._track(events_pb2.VIEW, choice)
            if random.random() < 0.1:
                self._track(events_pb2.ADD_TO_CART, choice)

    @task(1)
    def product_page(self) -> None:
        item_id = f"i{random.randint(1, ITEMS)}"
        self._track(events_pb2.VIEW, item_id)
        request = recommendations_pb2.RecommendRequest(user_id=self.user_id, k=10, context_item_id=item_id)
        timed("Recommend(context)", self.recs.Recommend, request)
