"""Customer records (attributes, consent) held in process memory, updated by UserService or `aisle.users`."""

from __future__ import annotations

from collections.abc import Iterator

from protos.aisle.v1 import users_pb2


class UserDirectory:
    """user_id -> the last upserted `User`."""

    def __init__(self) -> None:
        self._users: dict[str, users_pb2.User] = {}

    def __len__(self) -> int:
        return len(self._users)

    def records(self) -> Iterator[users_pb2.User]:
        """Every record, in the order they were first upserted."""
        return iter(self._users.values())

    def get(self, user_id: str) -> users_pb2.User | None:
        return self._users.get(user_id)

    def ids(self) -> list[str]:
        """Every user id with a record, sorted: a snapshot, safe to walk while records change."""
        return sorted(self._users)

    def upsert(self, user: users_pb2.User) -> None:
        stored = users_pb2.User()
        stored.CopyFrom(user)
        self._users[user.user_id] = stored

    def delete_user(self, user_id: str) -> bool:
        return self._users.pop(user_id, None) is not None

    def personalization_allowed(self, user_id: str) -> bool:
        """False only when the customer's record says no. Shops that need opt-in send consent with
        every user; a user Aisle has no record of is treated as the shop's events imply: consenting."""
        user = self._users.get(user_id)
        if user is None or not user.HasField("consent"):
            return True
        return user.consent.personalization

    def analytics_allowed(self, user_id: str) -> bool:
        """False when the customer's record carries consent without `analytics`: their events stay out of the
        batch store and so out of training. No record: allowed, as for personalization."""
        user = self._users.get(user_id)
        if user is None or not user.HasField("consent"):
            return True
        return user.consent.analytics
