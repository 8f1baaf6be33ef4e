from __future__ import annotations

import grpc

from protos.aisle.v1 import events_pb2, events_pb2_grpc
from server.engine import Engine


class EventService(events_pb2_grpc.EventServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def Track(
        self,
        request: events_pb2.TrackRequest,
        context: grpc.aio.ServicerContext[events_pb2.TrackRequest, events_pb2.TrackResponse],
    ) -> events_pb2.TrackResponse:
        result = await self.engine.track(request.events)
        return events_pb2.TrackResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            rejected=[events_pb2.Rejection(index=i, field=f, reason=r) for i, f, r in result.rejected],
        )
