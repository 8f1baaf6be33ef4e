"""The one place where Aisle's errors become gRPC statuses.

`AisleError` subclasses map to their `status`; `InvalidArgument` carries google.rpc.BadRequest field
violations in the status details (grpc-status-details-bin), which grpcurl and every gRPC client can
read. Anything else is a bug: it is logged with its traceback and answered INTERNAL.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from feature_worker.errors import AisleError, InvalidArgument
from server.interceptors.handlers import Context, Handler, unary_behaviour
from server.interceptors.wrapping import WrappingInterceptor

log = logging.getLogger(__name__)

#: Violations reported in one status: enough to fix a request, small enough for any header limit.
MAX_VIOLATIONS = 20


def to_status(error: AisleError) -> grpc.Status:
    code = getattr(code_pb2, error.status, code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=str(error)[:1000])
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=reason)
                    for field, reason in error.violations[:MAX_VIOLATIONS]
                ]
            )
        )
        status.details.append(detail)
    retry_after_s = getattr(
        error, "retry_after_s", None
    )  # set by errors a client should wait out (rate limits)
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1, int(retry_after_s * 1e9)))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return rpc_status.to_status(status)


class _Undecodable:
    """Stands in for a request that could not be read, so the handler can answer INVALID_ARGUMENT."""

    def __init__(self, reason: str) -> None:
        self.error = InvalidArgument([("request", reason)])


class ErrorInterceptor(WrappingInterceptor):
    """Wraps every unary-unary handler so domain errors leave as the right status.

    It also reads the request bytes first: an oversized or undecodable request is INVALID_ARGUMENT
    (gRPC itself would say RESOURCE_EXHAUSTED or INTERNAL). The wrapped handler is built once per method
    (gRPC hands the same registered handler for every call), not once per call.
    """

    def __init__(self, max_request_bytes: int) -> None:
        super().__init__()
        self.max_request_bytes = max_request_bytes

    def _wrap(self, method: str, handler: Handler) -> Handler:
        behaviour = unary_behaviour(handler)
        parse = handler.request_deserializer
        limit = self.max_request_bytes

        def deserialize(data: bytes) -> Any:
            if len(data) > limit:
                return _Undecodable(f"is {len(data)} bytes; the limit is {limit} bytes")
            try:
                return parse(data) if parse is not None else data
            except DecodeError:
                return _Undecodable("is not a valid protobuf message of the method's request type")

        async def guarded(request: Any, context: Context) -> Any:
            try:
                if isinstance(request, _Undecodable):
                    raise request.error
                return await behaviour(request, context)
            except AisleError as error:
                await context.abort_with_status(to_status(error))
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
