"""Decoding the records of the compacted `items` and `users` topics: one place for the catalog's follower
(`tables.TableFollower`) and the batch sink (`lake.sink`), so that both accept and refuse the same records.

A record's value is protobuf or its JSON form (`codec.decode`); a customer record may be sealed with the
customer's data key (then opened with `opener`). Invalid input raises `InvalidArgument` with its field details;
a null value (a delete) is the caller's to handle, since only it knows what a delete does there.
"""

from __future__ import annotations

from feature_worker.codec import decode
from feature_worker.errors import InvalidArgument
from feature_worker.privacy.events import EventOpener
from feature_worker.privacy.sealing import USER, is_sealed
from feature_worker.validation import validate_item, validate_user
from protos.aisle.v1 import catalog_pb2, users_pb2


def decode_item(value: bytes) -> catalog_pb2.Item:
    """An `items` record's value as a checked item."""
    item = decode(value, catalog_pb2.Item)
    _check(validate_item(item))
    return item


def decode_user(key: str, value: bytes, opener: EventOpener | None, reader: str) -> users_pb2.User | None:
    """A `users` record's value as a checked customer record; None for the sealed record of an erased customer
    (their key is gone). `reader` names the consumer in the error a sealed record gets without a master key."""
    if is_sealed(value):
        if opener is None:
            raise InvalidArgument([("value", f"sealed, but this {reader} has no master key")])
        opened = opener.open(key, value, USER)
        if opened is None:
            return None
        value = opened
    user = decode(value, users_pb2.User)
    _check(validate_user(user))
    return user


def _check(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise InvalidArgument(problems)
