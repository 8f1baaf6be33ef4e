"""The OpenAPI 3 document of the HTTP/JSON API, generated from the contract: paths from the `google.api.http`
routes, schemas from the message descriptors (the proto3 JSON mapping), descriptions from the .proto comments.

Comments come from `protos/aisle/v1/descriptors.binpb` (a descriptor set with source info that `make install`
writes beside the stubs); without it the document has no descriptions but is otherwise the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

import protos.aisle.v1
from server.gateway.descriptors import enum_type, message_type, owner
from server.gateway.routes import Route

DESCRIPTOR_SET = Path(protos.aisle.v1.__file__).resolve().parent / "descriptors.binpb"
STATUS_SCHEMA = "google.rpc.Status"

_SCALARS: dict[int, dict[str, str]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
}


def comments(path: Path = DESCRIPTOR_SET) -> dict[str, str]:
    """Leading comments by full name ("aisle.v1.Event", "aisle.v1.Event.user_id", "aisle.v1.EventService.Track")."""
    if not path.exists():
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    found: dict[str, str] = {}
    for file in files.file:
        by_path = {
            tuple(loc.path): "\n".join(line.strip() for line in loc.leading_comments.strip().splitlines())
            for loc in file.source_code_info.location
        }
        prefix = f"{file.package}." if file.package else ""
        _message_comments(found, by_path, file.message_type, prefix, (4,))
        _enum_comments(found, by_path, file.enum_type, prefix, (5,))
        for i, service in enumerate(file.service):
            found[f"{prefix}{service.name}"] = by_path.get((6, i), "")
            for j, method in enumerate(service.method):
                found[f"{prefix}{service.name}.{method.name}"] = by_path.get((6, i, 2, j), "")
    return {name: text for name, text in found.items() if text}


#: Source locations (descriptor paths) -> their leading comment, for one file.
_Comments = dict[tuple[int, ...], str]


def _message_comments(
    found: dict[str, str],
    by_path: _Comments,
    items: Iterable[descriptor_pb2.DescriptorProto],
    scope: str,
    at: tuple[int, ...],
) -> None:
    """The comments of ``items`` (messages at descriptor path ``at``), their fields, nested messages and enums."""
    for i, message in enumerate(items):
        name = f"{scope}{message.name}"
        found[name] = by_path.get((*at, i), "")
        for j, field in enumerate(message.field):
            found[f"{name}.{field.name}"] = by_path.get((*at, i, 2, j), "")
        _message_comments(found, by_path, message.nested_type, f"{name}.", (*at, i, 3))
        _enum_comments(found, by_path, message.enum_type, f"{name}.", (*at, i, 4))


def _enum_comments(
    found: dict[str, str],
    by_path: _Comments,
    items: Iterable[descriptor_pb2.EnumDescriptorProto],
    scope: str,
    at: tuple[int, ...],
) -> None:
    """The comments of ``items`` (enums at descriptor path ``at``) and their values."""
    for i, enum in enumerate(items):
        found[f"{scope}{enum.name}"] = by_path.get((*at, i), "")
        for j, value in enumerate(enum.value):
            found[f"{scope}{enum.name}.{value.name}"] = by_path.get((*at, i, 2, j), "")


def document(routes: list[Route], version: str, notes: dict[str, str] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document (a JSON-ready dict) of `routes`."""
    notes = comments() if notes is None else notes
    schemas: dict[str, Any] = {STATUS_SCHEMA: _status_schema()}
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for route in routes:
        method = route.method
        service = method.containing_service
        base_id = f"{service.name}_{method.name}"
        seen[base_id] = seen.get(base_id, 0) + 1
        operation: dict[str, Any] = {
            "operationId": base_id if seen[base_id] == 1 else f"{base_id}{seen[base_id]}",
            "tags": [service.name],
            "summary": f"{service.full_name}.{method.name}",
            "description": notes.get(f"{service.full_name}.{method.name}", ""),
            "parameters": _parameters(route, notes, schemas),
            "responses": {
                "200": {"description": "OK", "content": _json(_ref(method.output_type, notes, schemas))},
                "default": {
                    "description": "An error: the gRPC status as JSON (google.rpc.Status, with details)",
                    "content": _json({"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}),
                },
            },
        }
        if route.body:
            body_type = (
                method.input_type
                if route.body == "*"
                else message_type(method.input_type.fields_by_name[route.body])
            )
            operation["requestBody"] = {"required": True, "content": _json(_ref(body_type, notes, schemas))}
        paths.setdefault(route.template, {})[route.http_method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Aisle HTTP/JSON API",
            "version": version,
            "description": "Generated from the aisle.v1 contract (protos/) and its google.api.http options. "
            "Bodies are proto3 JSON; errors are google.rpc.Status with their details.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": dict(sorted(schemas.items())),
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _parameters(route: Route, notes: dict[str, str], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    message = route.method.input_type
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": notes.get(f"{message.full_name}.{name}", ""),
        }
        for name in route.variables
    ]
    if route.body == "*":
        return parameters
    bound = {name.split(".")[0] for name in route.variables} | {route.body}
    for field in message.fields:
        if field.name in bound or field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            continue
        parameters.append(
            {
                "name": field.name,
                "in": "query",
                "required": False,
                "schema": _field_schema(field, notes, schemas),
                "description": notes.get(f"{message.full_name}.{field.name}", ""),
                **({"explode": True} if field.is_repeated else {}),
            }
        )
    return parameters


def _ref(message: Descriptor, notes: dict[str, str], schemas: dict[str, Any]) -> dict[str, Any]:
    name = message.full_name
    if name not in schemas:
        schemas[name] = {}  # placeholder first: messages may refer to themselves
        properties = {field.json_name: _field_schema(field, notes, schemas) for field in message.fields}
        schemas[name] = {"type": "object", "description": notes.get(name, ""), "properties": properties}
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(enum: EnumDescriptor, notes: dict[str, str], schemas: dict[str, Any]) -> dict[str, Any]:
    name = enum.full_name
    if name not in schemas:
        lines = [notes.get(name, "")] + [
            f"- {v.name}: {notes.get(f'{name}.{v.name}', '')}" for v in enum.values
        ]
        schemas[name] = {
            "type": "string",
            "enum": [v.name for v in enum.values],
            "description": "\n".join(lines),
        }
    return {"$ref": f"#/components/schemas/{name}"}


def _field_schema(field: FieldDescriptor, notes: dict[str, str], schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {
            "type": "object",
            "additionalProperties": _single_schema(value, notes, schemas),
            "description": notes.get(f"{owner(field).full_name}.{field.name}", ""),
        }
    schema = _single_schema(field, notes, schemas)
    if field.is_repeated:
        schema = {"type": "array", "items": schema}
    description = notes.get(f"{owner(field).full_name}.{field.name}", "")
    if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref: wrap it to keep the field's description
        return {"allOf": [schema], "description": description}
    return {**schema, "description": description}


def _single_schema(field: FieldDescriptor, notes: dict[str, str], schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _ref(message_type(field), notes, schemas)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _enum(enum_type(field), notes, schemas)
    return dict(_SCALARS[field.type])


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "google.rpc.Status: the gRPC status code, a message, and typed details (e.g. "
        "google.rpc.BadRequest with fieldViolations[] of {field, description} for INVALID_ARGUMENT).",
        "properties": {
            "code": {
                "type": "integer",
                "format": "int32",
                "description": "The gRPC status code (3: INVALID_ARGUMENT).",
            },
            "message": {"type": "string"},
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"@type": {"type": "string"}},
                    "additionalProperties": True,
                },
            },
        },
    }
