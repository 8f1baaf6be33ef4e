"""The item-transition source alone as an evaluated model: rows ``transitions`` and ``transitions:train-only``.

Events are folded into a ``MemoryFeatures`` exactly as the serving path folds them (`ServingPipeline`), so
the scorer reads the same ``UserState.recent`` a server would. ``refresh`` fits the model
(``trainer.models.transitions``) and serves it through the server's own `ItemTransitions`, built from the fitted
arrays as `ItemTransitions.load` builds them from the file. Each case gets the source's top ``k`` with the case's
history excluded; fewer when fewer items follow the user's items (the rest counts as misses).

* ``transitions`` fits on every event the protocol lets the models learn: for ``loo --split test`` that includes
  each user's validation interaction (as the serving path's real-time sources count it).
* ``transitions:train-only`` fits on the training part only (``trainer.preparation.training_split``: what
  ``trainer train`` learns from); the events after it still enter each user's own history (``recent``), never
  the model: the published models' conditions for ``loo``.
"""

from __future__ import annotations

from collections.abc import Sequence

from protos.aisle.v1 import catalog_pb2, events_pb2
from server.retrieval.transitions import ItemTransitions
from trainer.evaluation.protocols import Case
from trainer.evaluation.serving import ServingPipeline
from trainer.models.transitions import TransitionModel, TransitionParams, fit

TRANSITIONS = "transitions"
TRANSITIONS_TRAIN_ONLY = "transitions:train-only"


def serving_view(model: TransitionModel) -> ItemTransitions:
    """The server's scorer over a fitted model, without a round trip through the file."""
    csr = model.neighbours
    return ItemTransitions(
        model.item_ids, csr.indptr, csr.indices, csr.data, model.params.decay, model.params.window
    )


class TransitionsEval(ServingPipeline):
    """The fold of the serving path, then the item-transition source alone."""

    def __init__(
        self,
        items: Sequence[catalog_pb2.Item],
        name: str = TRANSITIONS,
        fit_events: Sequence[events_pb2.Event] | None = None,
        params: TransitionParams | None = None,
    ) -> None:
        """``fit_events``: fit on these instead of on everything learned (the ``train-only`` row)."""
        super().__init__(items, name=name)
        self.fit_events = fit_events
        self.params = params
        self.learned_events: list[events_pb2.Event] = []
        self.model: TransitionModel | None = None
        self.scorer: ItemTransitions | None = None

    def update(self, events: Sequence[events_pb2.Event]) -> None:
        super().update(events)
        if self.fit_events is None and self.model is None:
            self.learned_events.extend(events)

    def refresh(self) -> None:
        """Fit at the first refresh only (after the static protocols' training events, after replay's warm-up).

        In replay the model then stays fixed, as a served bundle does, while each user's ``recent`` follows the
        stream: a refit every ``REFRESH_EVENTS`` would be retraining, not serving.
        """
        if self.model is not None:
            return
        events = self.fit_events if self.fit_events is not None else self.learned_events
        self.model = fit(events, self.params)
        self.scorer = serving_view(self.model)
        self.learned_events = []

    def rank(self, cases: Sequence[Case], k: int) -> list[list[str]]:
        scorer = self.scorer
        if scorer is None:
            return [[] for _ in cases]
        read = self.store.read_request
        out: list[list[str]] = []
        for case in cases:
            user = read(case.user_id, ()).user
            if user is None:
                out.append([])
                continue
            history = frozenset(case.history)
            found = scorer.top_ids(user.recent, (), k + len(history))
            out.append([item for item, _ in found if item not in history][:k])
        return out
