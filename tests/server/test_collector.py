"""The collector policy while serving: freezes after growth, long pauses logged."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

from server.collector import GrowthFreezer, log_long_pauses


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was (nothing frozen, no callback of ours)."""
    callbacks = list(gc.callbacks)
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.callbacks[:] = callbacks


def test_the_heap_is_frozen_after_every_so_many_computed_states(unfrozen: None) -> None:
    freezer = GrowthFreezer(every=3)
    freezer.grown(2)
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0
    freezer.grown(2)  # 4 >= 3: frozen, and the count starts over
    assert freezer.freezes == 1 and gc.get_freeze_count() > 0
    gc.unfreeze()
    freezer.grown(2)
    assert freezer.freezes == 1 and gc.get_freeze_count() == 0


def test_a_long_collection_is_logged_once_per_collection(
    unfrozen: None, caplog: pytest.LogCaptureFixture
) -> None:
    log_long_pauses(threshold_s=0.0)
    log_long_pauses(threshold_s=0.0)  # installing twice keeps one callback
    with caplog.at_level(logging.WARNING, logger="server.collector"):
        gc.collect()
    pauses = [r for r in caplog.records if "garbage collection of generation 2 paused" in r.getMessage()]
    assert len(pauses) == 1


def test_the_pause_log_does_not_walk_the_frozen_objects(
    unfrozen: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gc.get_freeze_count walks every frozen object: millions in a serving process, inside the pause it reports.
    walks: list[int] = []

    def walk() -> int:
        walks.append(1)
        return 0

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    log_long_pauses(threshold_s=0.0)
    with caplog.at_level(logging.WARNING, logger="server.collector"):
        gc.collect()
    assert any("objects collected" in r.getMessage() for r in caplog.records)
    assert walks == []
