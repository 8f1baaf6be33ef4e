from __future__ import annotations

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.engine import Engine
from server.recommender import Recommendation


def add_scored(
    target: RepeatedCompositeFieldContainer[recommendations_pb2.ScoredItem],
    items: list[Recommendation],
    explain: bool,
) -> None:
    """Append the answer's items to a message's repeated ``ScoredItem`` field, built in place (a list handed to
    the message's constructor is copied once more); reasons only when the client asked for them."""
    add = target.add
    if explain:
        for r in items:
            add(item_id=r.item_id, score=r.score, reasons=r.reasons)
    else:
        for r in items:
            add(item_id=r.item_id, score=r.score)


class RecommendationService(recommendations_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def Recommend(
        self,
        request: recommendations_pb2.RecommendRequest,
        context: grpc.aio.ServicerContext[
            recommendations_pb2.RecommendRequest, recommendations_pb2.RecommendResponse
        ],
    ) -> recommendations_pb2.RecommendResponse:
        answer = await self.engine.recommend(
            request.user_id,
            request.k,
            request.context_item_id,
            request.exclude_item_ids,
            request.category_prefix,
            request.max_per_category,
            request.explain,
            request.session_id,
        )
        response = recommendations_pb2.RecommendResponse(
            recommendation_id=answer.recommendation_id,
            variant=answer.variant,
            model_version=answer.model_version,
        )
        add_scored(response.items, answer.items, request.explain)
        return response

    async def SimilarItems(
        self,
        request: recommendations_pb2.SimilarItemsRequest,
        context: grpc.aio.ServicerContext[
            recommendations_pb2.SimilarItemsRequest, recommendations_pb2.SimilarItemsResponse
        ],
    ) -> recommendations_pb2.SimilarItemsResponse:
        answer = await self.engine.similar(
            request.item_id,
            request.k,
            request.exclude_item_ids,
            request.category_prefix,
            request.max_per_category,
        )
        response = recommendations_pb2.SimilarItemsResponse(model_version=answer.model_version)
        add_scored(response.items, answer.items, request.explain)
        return response
