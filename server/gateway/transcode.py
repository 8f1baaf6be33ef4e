"""HTTP request -> request message, and message -> JSON, by the rules of `google.api.http`.

- The template's variables set the fields they name (percent-decoded); they win over the body.
- `body: "*"`: the JSON body is the whole request (proto3 JSON: lowerCamelCase or the .proto names, enums by
  name or number, 64-bit integers as strings or numbers); the query string is not read.
- `body: "field"`: the JSON body is that (message) field; other fields come from the query string.
- no body: every other field comes from the query string: `?k=5&explain=true&exclude_item_ids=a&exclude_item_ids=b`
  (a repeated field by repeating the parameter, a nested one by its dotted path).

What cannot be read is an `Invalid` with one (field, reason) pair per problem, which the gateway answers as
the server answers bad input: INVALID_ARGUMENT (HTTP 400) with a google.rpc.BadRequest.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Sequence
from typing import cast
from urllib.parse import unquote

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.gateway.descriptors import enum_type
from server.gateway.routes import Route

Problem = tuple[str, str]

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


class Invalid(ValueError):
    """The HTTP request cannot become the request message: each problem as (field, reason)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))
        self.problems = list(problems)


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message type."""
    return message_factory.GetMessageClass(descriptor)


def build_request(
    route: Route, path_values: Sequence[str], query: Iterable[tuple[str, str]], body: bytes
) -> Message:
    """The request message of `route` from the HTTP request's parts (see the module's rules)."""
    message = message_class(route.method.input_type)()
    problems: list[Problem] = []
    if route.body == "*":
        _parse_json(body, message, "body", problems)
    elif route.body:
        target = getattr(message, route.body)
        _parse_json(body, target, route.body, problems)
    bound = set(route.variables)
    for field_path, raw in zip(route.variables, path_values, strict=True):
        _set_path(message, field_path, [unquote(raw)], problems)
    if route.body != "*":
        values: dict[str, list[str]] = {}
        for key, value in query:
            values.setdefault(key, []).append(value)
        for key, given in values.items():
            if key in bound or (route.body and key.split(".")[0] == route.body):
                problems.append((key, "is set by the path or the body, not the query string"))
            else:
                _set_path(message, key, given, problems)
    if problems:
        raise Invalid(problems)
    return message


def to_json(message: Message) -> bytes:
    """The proto3 JSON form of `message` (lowerCamelCase names, every field, 64-bit integers as strings)."""
    return json_format.MessageToJson(
        message, always_print_fields_with_no_presence=True, indent=None, ensure_ascii=False
    ).encode()


def _parse_json(body: bytes, message: Message, where: str, problems: list[Problem]) -> None:
    if not body.strip():
        return
    try:
        json_format.Parse(body.decode("utf-8"), message)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        problems.append((where, f"is not a valid JSON {message.DESCRIPTOR.name}: {exc}"))


def _set_path(message: Message, field_path: str, values: list[str], problems: list[Problem]) -> None:
    """Set the (possibly dotted) field `field_path` of `message` from its text values."""
    names = field_path.split(".")
    target = message
    for depth, name in enumerate(names):
        field = _field(_descriptor(target), name)
        if field is None:
            problems.append((field_path, f"is not a field of {target.DESCRIPTOR.full_name}"))
            return
        if depth < len(names) - 1:
            if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE or _is_repeated(field):
                problems.append((field_path, f"{name} is not a message field"))
                return
            target = getattr(target, field.name)
            continue
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            problems.append((field_path, "is a message: send it in a JSON body"))
            return
        try:
            converted = [_scalar(field, value) for value in values]
        except ValueError as exc:
            problems.append((field_path, str(exc)))
            return
        if _is_repeated(field):
            getattr(target, field.name).extend(converted)
        elif len(converted) > 1:
            problems.append((field_path, "is not repeated but was given more than once"))
        else:
            setattr(target, field.name, converted[0])


def _descriptor(message: Message) -> Descriptor:
    """The message's descriptor. protobuf's stubs also allow upb's own descriptor class here; at run time the
    public `Descriptor` is that class whenever upb is the backend, so they are one type."""
    return cast(Descriptor, message.DESCRIPTOR)


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(name)
    if field is None:
        field = next((f for f in descriptor.fields if f.json_name == name), None)
    return field


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _scalar(field: FieldDescriptor, text: str) -> object:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            try:
                return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            except (binascii.Error, ValueError) as exc:
                raise ValueError("is not base64") from exc
        return text
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        try:
            number = int(text)
        except ValueError as exc:
            raise ValueError(f"is not an integer: {text[:32]!r}") from exc
        if not low <= number <= high:
            raise ValueError(f"is out of range: {number}")
        return number
    if kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        try:
            real = float(text)
        except ValueError as exc:
            raise ValueError(f"is not a number: {text[:32]!r}") from exc
        # proto3 JSON spells the special values NaN, Infinity, -Infinity; Python's "inf", "nan" are not numbers there.
        if not math.isfinite(real) and text not in ("NaN", "Infinity", "-Infinity"):
            raise ValueError(f"is not a number: {text[:32]!r}")
        return real
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"is not true or false: {text[:32]!r}")
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = enum_type(field)
        by_name = enum.values_by_name.get(text)
        if by_name is not None:
            return by_name.number
        if text.lstrip("-").isdigit() and int(text) in enum.values_by_number:
            return int(text)
        raise ValueError(f"is not a {enum.name}: {text[:32]!r}")
    raise ValueError("cannot be set from the query string")
