"""gRPC statuses as HTTP answers: the status code by google.rpc.Code's mapping, the body a google.rpc.Status in
JSON, with the server's details (a google.rpc.BadRequest for INVALID_ARGUMENT) as `@type`-tagged objects:

    HTTP/1.1 400 Bad Request
    {"code": 3, "message": "invalid request", "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
     "fieldViolations": [{"field": "k", "description": "must be from 1 to 200 (0 means 10), got 1000"}]}]}
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from server.gateway.transcode import Problem

#: google.rpc.Code -> HTTP status (google/rpc/code.proto, as grpc-gateway and ESP map them).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

_DETAILS_KEY = "grpc-status-details-bin"


def status_json(
    code: grpc.StatusCode, message: str, trailing_metadata: Sequence[tuple[str, str | bytes]] = ()
) -> bytes:
    """The JSON body for a failed call: the server's google.rpc.Status when it sent one, else code + message."""
    status = status_pb2.Status(code=code.value[0], message=message)
    for key, value in trailing_metadata or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            status.ParseFromString(value)
    return json_format.MessageToJson(status, indent=None).encode()


def bad_request_json(problems: Sequence[Problem], message: str = "invalid request") -> bytes:
    """INVALID_ARGUMENT with a google.rpc.BadRequest, for what the gateway itself could not read."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in problems
        ]
    )
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)
    status.details.add().Pack(bad_request)
    return json_format.MessageToJson(status, indent=None).encode()
