"""What the harness needs of anything it evaluates: learn events, rebuild, rank cases."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from protos.aisle.v1 import events_pb2
from trainer.evaluation.protocols import Case


class EvalModel(ABC):
    """A model (or pipeline configuration) under evaluation.

    The harness calls ``update`` with events in time order, ``refresh`` whenever derived state should catch up
    (once after training in the static protocols, every ``REFRESH_EVENTS`` in replay) and ``rank`` for the
    cases.
    ``rank`` must exclude each case's history and answer from what was learned so far only.
    """

    #: The row name in the report.
    name: str

    @abstractmethod
    def update(self, events: Sequence[events_pb2.Event]) -> None:
        """Learn from ``events`` (in time order)."""

    def update_private(self, events: Sequence[events_pb2.Event]) -> None:
        """Let ``events`` into their own users' histories only (``--strict``): no item statistic, count or
        weight may learn from them. Models that read a case's history from the case itself (every baseline)
        have nothing to do."""

    @abstractmethod
    def refresh(self) -> None:
        """Rebuild what is derived from all events learned so far."""

    @abstractmethod
    def rank(self, cases: Sequence[Case], k: int) -> list[list[str]]:
        """The top ``k`` items for each case, best first, the case's history excluded. Batch-first."""
