from __future__ import annotations

import grpc

from protos.aisle.v1 import users_pb2, users_pb2_grpc
from server.engine import Engine


class UserService(users_pb2_grpc.UserServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def UpsertUser(  # noqa: N802
        self, request: users_pb2.UpsertUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.UpsertUserResponse:
        await self.engine.upsert_user(request.user)
        return users_pb2.UpsertUserResponse()

    async def GetProfile(  # noqa: N802
        self, request: users_pb2.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.Profile:
        return await self.engine.profile(request.user_id)
