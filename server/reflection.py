"""Server reflection that also resolves method names.

Tools such as ghz ask for the file containing a *method* (`aisle.v1.RecommendationService.Recommend`);
the C++-backed (upb) descriptor pool of Python protobuf only finds messages, enums, services and
fields, so the stock servicer answers NOT_FOUND. This one retries with the enclosing service name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer


class MethodAwareReflectionServicer(ReflectionServicer):
    # Set by grpc's BaseReflectionServicer.__init__; its stubs leave the private attribute out.
    _pool: DescriptorPool

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            service, _, method = fully_qualified_name.rpartition(".")
            try:
                descriptor = self._pool.FindServiceByName(service)
            except KeyError:
                descriptor = None
            if descriptor is not None and method in descriptor.methods_by_name:
                fully_qualified_name = service
        # A private method of grpc's servicer (the one this class exists to override), absent from its stubs.
        return super()._file_containing_symbol(request, fully_qualified_name)  # type: ignore[misc]


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection (grpc.reflection.v1alpha) for these services and reflection itself."""
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = MethodAwareReflectionServicer(names)
    # types-grpcio-reflection leaves this generated function's parameters unannotated.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
