"""SimilarItems: an item's neighbours, through the same ranking path as Recommend."""

from __future__ import annotations

from collections.abc import Sequence

from feature_worker.errors import InvalidArgument
from feature_worker.validation import check_id
from server.engine.answers import MODEL_VERSION, Answer
from server.engine.checks import check_common
from server.engine.core import EngineCore
from server.recommender import DEFAULT_K, Recommendation


class Similar(EngineCore):
    """SimilarItems."""

    async def similar_items(
        self, item_id: str, k: int, exclude_item_ids: Sequence[str] = (), category_prefix: str = ""
    ) -> list[Recommendation]:
        return (await self.similar(item_id, k, exclude_item_ids, category_prefix)).items

    async def similar(
        self,
        item_id: str,
        k: int,
        exclude_item_ids: Sequence[str] = (),
        category_prefix: str = "",
        max_per_category: int = 0,
    ) -> Answer:
        """`similar_items` with the model version that answered (no recommendation id)."""
        violations: list[tuple[str, str]] = []
        check_id(item_id, "item_id", violations)
        check_common(k, exclude_item_ids, category_prefix, violations, max_per_category)
        if violations:
            raise InvalidArgument(violations)
        if self.lists_refresh_s <= 0:
            await self.refresh_lists()
        features = await self.store.read_request("", (item_id,))
        learned = self.models.current if self.models is not None else None
        items = self.recommender.similar_items(
            item_id, k or DEFAULT_K, features, exclude_item_ids, category_prefix, learned, max_per_category
        )
        return Answer(items, "", "default", learned.version if learned else MODEL_VERSION)
