"""The serving path as an evaluated model: the fold, the in-process store and the server's `Recommender`.

Nothing here ranks: events go through ``feature_worker.fold.fold`` into ``MemoryFeatures`` (the core of the
embedded server's store, written as the embedded server and the Kafka worker write them), the popular and
trending lists are rebuilt by ``TopLists.build`` (as the server's background task does) and each case is
answered by ``Recommender.recommend`` on the features ``MemoryFeatures.read_request`` returns (as
``Engine.recommend`` does), with the case's history as ``exclude_item_ids``.
Given a model bundle's retriever (``learned``), the two-tower source joins the candidates and the bundle's
learned ranker (if it has one, and ``use_ranker``) ranks them, as in a server serving that bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from feature_worker.catalog import Catalog
from feature_worker.fold import FoldConfig, ItemDeltas, fold
from feature_worker.stores.memory import MemoryFeatures
from protos.aisle.v1 import catalog_pb2, events_pb2
from server.recommender import BlendWeights, Query, Recommender
from server.retrieval.toplists import TopLists
from trainer.evaluation.base import EvalModel
from trainer.evaluation.protocols import Case

if TYPE_CHECKING:
    from server.retrieval.two_tower import TwoTowerRetriever

#: Events folded per store commit; the embedded server commits each `Track` batch (at most 1,000 events).
COMMIT_EVENTS = 1_000


class ServingPipeline(EvalModel):
    """The server's pipeline, configured by ``config`` and ``weights`` (by default, the server's)."""

    def __init__(
        self,
        items: Sequence[catalog_pb2.Item],
        name: str = "aisle",
        config: FoldConfig | None = None,
        weights: BlendWeights | None = None,
        learned: TwoTowerRetriever | None = None,
        use_ranker: bool = True,
        max_per_category: int = 0,
    ) -> None:
        self.name = name
        #: The diversity cap asked for in every query (0: the server's default).
        self.max_per_category = max_per_category
        self.catalog = Catalog()
        self.catalog.upsert_many(items)
        self.config = config or FoldConfig()
        self.store = MemoryFeatures(self.config)
        self.recommender = Recommender(self.catalog, weights or BlendWeights(), use_ranker=use_ranker)
        self.learned = learned

    def update(self, events: Sequence[events_pb2.Event]) -> None:
        self._fold(events, shop_wide=True)

    def update_private(self, events: Sequence[events_pb2.Event]) -> None:
        """Fold ``events`` into their users' features and drop the item deltas (popularity, trend,
        co-visitation): the users' own histories, affinities and carts change, nothing shop-wide does."""
        self._fold(events, shop_wide=False)

    def _fold(self, events: Sequence[events_pb2.Event], shop_wide: bool) -> None:
        """Fold in batches of `COMMIT_EVENTS`, as the server commits; ``shop_wide`` commits the item deltas too."""
        store, catalog, config = self.store, self.catalog, self.config
        for lo in range(0, len(events), COMMIT_EVENTS):
            batch = events[lo : lo + COMMIT_EVENTS]
            users = store.load_users({event.user_id for event in batch})
            deltas = ItemDeltas()
            for event in batch:
                fold(users[event.user_id], event, catalog, deltas, config)
            store.commit(users, deltas if shop_wide else ItemDeltas())

    def refresh(self) -> None:
        self.recommender.lists = TopLists.build(self.store.item_stats(), self.catalog)

    def rank(self, cases: Sequence[Case], k: int) -> list[list[str]]:
        read, recommend, learned = self.store.read_request, self.recommender.recommend, self.learned
        out: list[list[str]] = []
        for case in cases:
            features = read(case.user_id, ())
            query = Query(
                user_id=case.user_id,
                k=k,
                exclude_item_ids=frozenset(case.history),
                max_per_category=self.max_per_category,
                explain=False,
            )
            out.append([r.item_id for r in recommend(query, features, learned)])
        return out
