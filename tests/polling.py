"""Waiting for what a server does on its own schedule (a file watcher, a metrics writer, a topic consumer)."""

from __future__ import annotations

import time
from collections.abc import Callable

from clients.client import AisleClient


def wait_for(
    condition: Callable[[], bool],
    what: str | Callable[[], str],
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
) -> None:
    """Poll `condition()` every `interval_s` until it holds; AssertionError naming `what` after `timeout_s`.

    `what` may be a callable, for a message that says what was found when the wait gave up.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(interval_s)


def wait_for_version(client: AisleClient, user: str, version: str, timeout_s: float = 30.0) -> None:
    """Ask until the server answers `user` with model ``version`` (a promotion is served a poll or two later)."""
    wait_for(
        lambda: client.recommend(user, 1).model_version == version,
        f"the server to serve {version}",
        timeout_s,
        interval_s=0.05,
    )
