"""Pure learned retrieval as an evaluated model: a bundle's user tower and item index, nothing blended.

The row ``two_tower`` of ``trainer evaluate --bundle DIR``. It goes through the server's own
`TwoTowerRetriever`: events are folded into a ``MemoryFeatures`` exactly as the serving path folds them
(`ServingPipeline.update`), so the tower reads the same ``UserState.recent`` (same cap, same types) a server
would; each case is then the top ``k`` of the index for the user's vector, the case's history excluded. A
user none of whose items the bundle knows gets an empty list (a miss). The bundle is not retrained: what the
replay protocol measures is how far real-time features carry a fixed model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protos.aisle.v1 import catalog_pb2
from server.retrieval.bundles import BundlePaths
from server.retrieval.two_tower import TwoTowerRetriever
from trainer.evaluation.protocols import Case
from trainer.evaluation.serving import ServingPipeline

log = logging.getLogger(__name__)


class TwoTowerModel(ServingPipeline):
    """The fold of the serving path, then the bundle's retriever alone."""

    def __init__(
        self, items: Sequence[catalog_pb2.Item], learned: TwoTowerRetriever, name: str = "two_tower"
    ) -> None:
        super().__init__(items, name=name, learned=learned)
        self.retriever = learned

    def refresh(self) -> None:
        """Nothing derived: the popular and trending lists play no part in pure learned retrieval."""

    def rank(self, cases: Sequence[Case], k: int) -> list[list[str]]:
        read, retriever = self.store.read_request, self.retriever
        out: list[list[str]] = []
        for case in cases:
            user = read(case.user_id, ()).user
            vector = retriever.encode(user.recent, ()) if user is not None else None
            if vector is None:
                out.append([])
                continue
            out.append([item for item, _ in retriever.search(vector, k, frozenset(case.history))])
        return out


def load_bundle(path: Path) -> TwoTowerRetriever:
    """The retriever of the bundle directory ``path`` (checked as the server checks it)."""
    return TwoTowerRetriever.load(BundlePaths(Path(path)))


def provenance_warnings(meta: Mapping[str, Any], dataset_name: str) -> list[str]:
    """Why the bundle's numbers may not mean what they seem on ``dataset_name`` (empty: none).

    A bundle records the data it was trained on in ``meta.json`` (``data.dataset``, the data set's name, as
    ``trainer train`` writes it; ``name`` is read too); evaluated on another data set, its item ids and its
    notion of "next" belong elsewhere.
    """
    data = meta.get("data")
    if not isinstance(data, Mapping):
        return [f"the bundle records no training data (meta.json 'data' is {data!r}): cannot check it"]
    trained_on = data.get("dataset", data.get("name"))
    if trained_on is None:
        return [
            "the bundle's meta.json 'data' has no 'dataset': cannot check which data set it was trained on"
        ]
    if str(trained_on) != dataset_name:
        return [
            f"the bundle was trained on {trained_on!r}, not on {dataset_name!r}: its numbers here mean little"
        ]
    return []
