"""The re-ranker's training lists, made by the serving path itself.

For each case of the protocol's training split (``trainer.preparation.training_split``: each user's next new item
after the events the first stage learned from), the events before it are folded exactly as the server folds
them, and the server's `Recommender.retrieve` and `Recommender.features` produce the request's candidate
matrix, as they would for that user at that moment. The target event and everything after it are never folded
before the lists are built, so no feature can read them (``tests/trainer/test_ranker_data.py`` checks by
changing every later event and comparing the matrices). A list whose candidates miss the target teaches
nothing about ordering and is counted, not kept (`RankerLists.recall` is the share kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from protos.aisle.v1 import catalog_pb2, events_pb2
from server.recommender import BlendWeights, Query
from server.retrieval.two_tower import TwoTowerRetriever
from trainer.evaluation.protocols import Case
from trainer.evaluation.serving import ServingPipeline

#: Candidates are ranked for this k when the lists are made (k only affects the answer, not the candidates).
LIST_K = 10


@dataclass(slots=True)
class RankerLists:
    """Candidate lists with their features, one target row each.

    ``features[offsets[i]:offsets[i + 1]]`` are list i's rows (only the rows the rules allow), ``target[i]``
    the row of the right answer within the list and ``blend[...]`` the blended score of each row (the serving
    path's score without a ranker, for comparison).
    """

    features: npt.NDArray[np.float32]
    blend: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]
    target: npt.NDArray[np.int64]
    #: Lists made (cases asked) and lists whose candidates held the target (kept).
    cases: int
    #: The case of each kept list (user id), for splitting by user.
    users: list[str]

    @property
    def recall(self) -> float:
        return len(self.target) / self.cases if self.cases else 0.0

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, lists: npt.NDArray[np.int64]) -> RankerLists:
        """The lists numbered ``lists`` (in that order)."""
        starts, ends = self.offsets[lists], self.offsets[lists + 1]
        rows = (
            np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
            if len(lists)
            else np.zeros(0, int)
        )
        sizes = ends - starts
        return RankerLists(
            features=self.features[rows],
            blend=self.blend[rows],
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            target=self.target[lists],
            cases=len(lists),
            users=[self.users[i] for i in lists.tolist()],
        )


def build_lists(
    items: Sequence[catalog_pb2.Item],
    train: Sequence[events_pb2.Event],
    cases: Sequence[Case],
    learned: TwoTowerRetriever | None,
    weights: BlendWeights | None = None,
    progress: bool = True,
) -> RankerLists:
    """Fold ``train`` through the serving path, then make one candidate list per case (see the module doc)."""
    pipeline = ServingPipeline(items, weights=weights, learned=learned)
    pipeline.update(train)
    pipeline.refresh()
    recommender, read = pipeline.recommender, pipeline.store.read_request
    features: list[npt.NDArray[np.float32]] = []
    blends: list[npt.NDArray[np.float64]] = []
    sizes: list[int] = []
    targets: list[int] = []
    users: list[str] = []
    for case in tqdm(cases, desc="ranker lists", unit="case", disable=not progress, leave=False):
        request = read(case.user_id, ())
        query = Query(user_id=case.user_id, k=LIST_K, exclude_item_ids=frozenset(case.history), explain=False)
        stage = recommender.retrieve(query, request, learned)
        index, pool = stage.index, stage.pool
        target = index.position.get(case.target, -1)
        if target < 0:
            continue
        allowed = stage.rules.allowed_rows(index, pool.positions)
        hit = np.flatnonzero(pool.positions[allowed] == target)
        if not len(hit):
            continue
        features.append(recommender.features(stage, allowed))
        blends.append(recommender.blend(pool)[allowed])
        sizes.append(len(allowed))
        targets.append(int(hit[0]))
        users.append(case.user_id)
    width = len(features[0][0]) if features else 0
    return RankerLists(
        features=np.concatenate(features) if features else np.zeros((0, width), dtype=np.float32),
        blend=np.concatenate(blends) if blends else np.zeros(0),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        target=np.array(targets, dtype=np.int64),
        cases=len(cases),
        users=users,
    )


def list_metrics(
    lists: RankerLists, scores: npt.NDArray[np.floating], cases: int | None = None
) -> dict[str, float]:
    """NDCG@10 and HR@10 of ranking each list by ``scores`` (ties against the target), over ``cases`` cases
    (default: every case asked, so lists without the target count as misses)."""
    total = lists.cases if cases is None else cases
    if not total:
        return {"NDCG@10": 0.0, "HR@10": 0.0}
    ndcg = hr = 0.0
    offsets = lists.offsets
    for i, t in enumerate(lists.target.tolist()):
        s = scores[offsets[i] : offsets[i + 1]]
        rank = int((s > s[t]).sum()) + 1
        if rank <= 10:
            hr += 1.0
            ndcg += 1.0 / np.log2(rank + 1.0)
    return {"NDCG@10": ndcg / total, "HR@10": hr / total}
