"""The garbage collector while serving: what start-up and bulk growth built is frozen, long pauses are logged.

CPython's full collection walks every tracked object. A server holding a shop's state (users, co-visitation
lists, each bundle's remembered proposals) has millions: a full collection then stops the process for hundreds
of milliseconds (about 0.47 s with a 100,000-user shop and its proposals on the 2-core benchmark machine), which
every request in flight waits for. `gc.freeze` moves everything tracked into a generation the collector never
walks; objects there are still freed by reference counting as usual, so the only cost is that a reference cycle
among objects alive at a freeze is never collected (the shop's state holds none). `serve` freezes after start-up
(the journal replayed), and `GrowthFreezer` again each time the warmer has computed many user states (a bundle
swap, a bulk load through Track), when most of what is alive is the shop's state.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Freeze again after the warmer has computed this many user states since the last freeze.
FREEZE_EVERY_STATES = 10_000
#: Collections that stop the process for longer than this are logged (WARNING).
LONG_PAUSE_S = 0.05


class GrowthFreezer:
    """Counts the user states the warmer computes (`grown`, from its thread) and freezes every `every`."""

    def __init__(self, every: int = FREEZE_EVERY_STATES) -> None:
        self.every = every
        self._since = 0
        self._lock = threading.Lock()
        #: Freezes done (for logs and tests).
        self.freezes = 0

    def grown(self, states: int) -> None:
        with self._lock:
            self._since += states
            if self._since < self.every:
                return
            self._since = 0
            self.freezes += 1
        gc.freeze()
        # Not `gc.get_freeze_count()`: it walks every frozen object (millions here), holding the GIL.
        log.debug("froze the tracked objects after %d computed user states", self.every)


def log_long_pauses(threshold_s: float = LONG_PAUSE_S) -> None:
    """Log every collection that stops the process for longer than ``threshold_s`` (one callback per process;
    a second call only changes the threshold)."""
    global _threshold_s
    _threshold_s = threshold_s
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


_threshold_s = LONG_PAUSE_S
_started = 0.0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    paused = time.perf_counter() - _started
    if paused > _threshold_s:
        # Nothing here may walk the heap (`gc.get_freeze_count()` walks every frozen object): this runs inside
        # the pause it reports, and would lengthen it.
        log.warning(
            "garbage collection of generation %d paused the process for %.0f ms (%d objects collected)",
            info.get("generation", -1),
            paused * 1e3,
            info.get("collected", 0),
        )
