from __future__ import annotations

import grpc

from protos.aisle.v1 import recommendations_pb2, recommendations_pb2_grpc
from server.engine import Engine
from server.recommender import Recommendation


def scored(items: list[Recommendation], explain: bool) -> list[recommendations_pb2.ScoredItem]:
    """The answer's items as messages; reasons only when the client asked for them."""
    if explain:
        return [
            recommendations_pb2.ScoredItem(item_id=r.item_id, score=r.score, reasons=r.reasons) for r in items
        ]
    return [recommendations_pb2.ScoredItem(item_id=r.item_id, score=r.score) for r in items]


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
        return recommendations_pb2.RecommendResponse(
            items=scored(answer.items, request.explain),
            recommendation_id=answer.recommendation_id,
            variant=answer.variant,
            model_version=answer.model_version,
        )

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
        return recommendations_pb2.SimilarItemsResponse(
            items=scored(answer.items, request.explain), model_version=answer.model_version
        )
