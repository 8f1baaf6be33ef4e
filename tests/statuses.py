"""The statuses and field details of calls over a real channel, for tests of what the server refuses and why."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

#: Call metadata as the tests write it; grpc's stubs want a tuple, which `status_of()` makes.
Metadata = Sequence[tuple[str, str | bytes]]


def bearer(token: str) -> list[tuple[str, str]]:
    """The call metadata that carries `token`."""
    return [("authorization", f"Bearer {token}")]


def status_of(
    channel: grpc.Channel,
    method: str,
    request: Message | bytes,
    metadata: Metadata | None = None,
    timeout_s: float = 10,
) -> grpc.StatusCode:
    """The status of one call of `method` (a message or raw bytes, on a generic method, so it reaches every
    method, including those a server may not implement) with `metadata`."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    try:
        rpc(data, metadata=None if metadata is None else tuple(metadata), timeout=timeout_s)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def field_violations(error: grpc.RpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest details of a refused call, in order."""
    # The RpcError a call raises is also the call (a grpc.Call), which the stubs do not say.
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


def refusal_of(call: Callable[..., object], *args: object) -> tuple[grpc.StatusCode, list[str]]:
    """The status and the BadRequest fields of `call(*args)`, which must raise."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), field_violations(info.value)
