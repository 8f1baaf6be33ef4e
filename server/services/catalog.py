from __future__ import annotations

import grpc

from protos.aisle.v1 import catalog_pb2, catalog_pb2_grpc
from server.engine import Engine


class CatalogService(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def UpsertItems(
        self,
        request: catalog_pb2.UpsertItemsRequest,
        context: grpc.aio.ServicerContext[catalog_pb2.UpsertItemsRequest, catalog_pb2.UpsertItemsResponse],
    ) -> catalog_pb2.UpsertItemsResponse:
        return catalog_pb2.UpsertItemsResponse(upserted=await self.engine.upsert_items(request.items))

    async def GetItem(
        self,
        request: catalog_pb2.GetItemRequest,
        context: grpc.aio.ServicerContext[catalog_pb2.GetItemRequest, catalog_pb2.Item],
    ) -> catalog_pb2.Item:
        return self.engine.get_item(request.item_id)

    async def DeleteItems(
        self,
        request: catalog_pb2.DeleteItemsRequest,
        context: grpc.aio.ServicerContext[catalog_pb2.DeleteItemsRequest, catalog_pb2.DeleteItemsResponse],
    ) -> catalog_pb2.DeleteItemsResponse:
        return catalog_pb2.DeleteItemsResponse(deleted=await self.engine.delete_items(request.item_ids))
