"""Reads of one record: a catalog item, a customer's profile."""

from __future__ import annotations

from feature_worker.errors import InvalidArgument, NotFound
from feature_worker.validation import check_id
from protos.aisle.v1 import catalog_pb2, users_pb2
from server.engine.answers import now_ms
from server.engine.core import EngineCore
from server.profile import build_profile


class Reads(EngineCore):
    """GetItem and GetProfile."""

    def get_item(self, item_id: str) -> catalog_pb2.Item:
        violations: list[tuple[str, str]] = []
        check_id(item_id, "item_id", violations)
        if violations:
            raise InvalidArgument(violations)
        item = self.catalog.record(item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        return item

    async def profile(self, user_id: str) -> users_pb2.Profile:
        violations: list[tuple[str, str]] = []
        check_id(user_id, "user_id", violations)
        if violations:
            raise InvalidArgument(violations)
        features = await self.store.read_request(user_id, ())
        clock = max(self.recommender.lists.clock_ms, features.user.last_seen_ms if features.user else 0)
        return build_profile(user_id, features.user, self.users.get(user_id), clock or now_ms())
