"""SegmentService: thin translation between the streamed messages and `server.segments`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from feature_worker.errors import AisleError
from protos.aisle.v1 import segments_pb2, segments_pb2_grpc
from server.engine import Engine
from server.interceptors.errors import to_status
from server.segments import export
from server.services.recommendations import add_scored


class SegmentService(segments_pb2_grpc.SegmentServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def ExportRecommendations(
        self,
        request: segments_pb2.ExportRecommendationsRequest,
        context: grpc.aio.ServicerContext[
            segments_pb2.ExportRecommendationsRequest, segments_pb2.ExportRecommendationsResponse
        ],
    ) -> AsyncIterator[segments_pb2.ExportRecommendationsResponse]:
        # The error interceptor wraps unary calls only: a streaming call maps its domain errors here.
        try:
            async for chunk in export(self.engine, request):
                response = segments_pb2.ExportRecommendationsResponse(
                    scanned=chunk.scanned, total=chunk.total, model_version=chunk.model_version
                )
                for row in chunk.rows:
                    customer = response.customers.add(
                        user_id=row.user_id,
                        recommendation_id=row.recommendation_id,
                        personalized=row.personalized,
                    )
                    add_scored(customer.items, row.items, request.explain)
                yield response
        except AisleError as exc:
            await context.abort_with_status(to_status(exc))
