"""Reading Kafka record values: protobuf, or the protobuf JSON form for producers without the stubs.

A value whose first non-blank byte is `{` is JSON (`google.protobuf.json_format`: field names as in
the .proto or lowerCamelCase, enums by name or number, 64-bit integers as numbers or strings, unknown
fields refused); anything else is the binary protobuf encoding. No binary `Event`, `Item` or `User`
starts with `{` (it would be field 15 as a group, which these messages do not have), so the two never
collide.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from feature_worker.errors import InvalidArgument

M = TypeVar("M", bound=Message)

_BLANK = b" \t\r\n"


def decode(value: bytes, message_type: type[M]) -> M:
    """Parse one record value; raises `InvalidArgument` naming what is wrong with it."""
    first = value[:1]
    # Protobuf records never start with a blank or `{`: only those pay for the look past blanks.
    if first == b"{" or (first in _BLANK and value.lstrip(_BLANK)[:1] == b"{"):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument([("value", f"JSON that is not UTF-8: {exc}")]) from exc
        try:
            return json_format.Parse(text, message_type())
        except json_format.ParseError as exc:
            raise InvalidArgument(
                [("value", f"not a JSON {message_type.DESCRIPTOR.name}: {exc}"[:500])]
            ) from exc
    try:
        return message_type.FromString(value)
    except DecodeError as exc:
        raise InvalidArgument([("value", f"not a protobuf {message_type.DESCRIPTOR.name}: {exc}")]) from exc
