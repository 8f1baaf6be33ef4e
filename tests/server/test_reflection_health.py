"""Health and reflection, as grpcurl and ghz use them."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loadtest.harness.server import ServerProcess


def reflect(
    target: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        # types-grpcio-reflection declares the method as an `Incomplete` that mypy cannot call.
        answers = stub.ServerReflectionInfo(iter([request]), timeout=10)  # type: ignore[operator]
        first: reflection_pb2.ServerReflectionResponse = next(iter(answers))
        return first


def test_health_reports_serving_for_each_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "aisle.v1.RecommendationService", "aisle.v1.EventService"):
            # types-grpcio-health-checking's HealthStub declares no methods.
            check = health.Check  # type: ignore[attr-defined]
            status = check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_services_and_resolves_methods(server: ServerProcess) -> None:
    listed = reflect(server.target, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"aisle.v1.RecommendationService", "aisle.v1.EventService", "grpc.health.v1.Health"} <= names
    # ghz asks for the file of a method, not of a service.
    method = reflect(
        server.target,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="aisle.v1.RecommendationService.Recommend"
        ),
    )
    assert method.file_descriptor_response.file_descriptor_proto
    missing = reflect(
        server.target,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="aisle.v1.RecommendationService.Nope"),
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
