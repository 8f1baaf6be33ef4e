from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from feature_worker.errors import AisleError
from protos.aisle.v1 import users_pb2, users_pb2_grpc
from server.engine import Engine
from server.privacy.audit import caller

if TYPE_CHECKING:
    from server.privacy.rights import CustomerRights


class UserService(users_pb2_grpc.UserServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def UpsertUser(
        self,
        request: users_pb2.UpsertUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.UpsertUserRequest, users_pb2.UpsertUserResponse],
    ) -> users_pb2.UpsertUserResponse:
        await self.engine.upsert_user(request.user)
        return users_pb2.UpsertUserResponse()

    async def GetProfile(
        self,
        request: users_pb2.GetProfileRequest,
        context: grpc.aio.ServicerContext[users_pb2.GetProfileRequest, users_pb2.Profile],
    ) -> users_pb2.Profile:
        return await self.engine.profile(request.user_id)

    async def EraseUser(
        self,
        request: users_pb2.EraseUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.EraseUserRequest, users_pb2.EraseUserResponse],
    ) -> users_pb2.EraseUserResponse:
        return await self._rights().erase(request.user_id, caller(), context.peer())

    async def ExportUser(
        self,
        request: users_pb2.ExportUserRequest,
        context: grpc.aio.ServicerContext[users_pb2.ExportUserRequest, users_pb2.ExportUserResponse],
    ) -> users_pb2.ExportUserResponse:
        return await self._rights().export(request.user_id, caller(), context.peer())

    def _rights(self) -> CustomerRights:
        rights = self.engine.rights
        if rights is None:
            raise _NoRights("erasure and export are not configured on this server")
        return rights


class _NoRights(AisleError):
    status = "UNIMPLEMENTED"
