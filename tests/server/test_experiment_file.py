"""The experiments file read by the server's store: a file caught while it is rewritten changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

from server.experiments.store import ExperimentStore
from tests.server.test_experiments import SOURCES_RUNNING as RUNNING


def write(path: Path, text: str, stamp: int) -> None:
    """Write ``text`` with its own modification time, as successive edits have."""
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))


async def test_an_empty_file_keeps_the_experiments_in_force(tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    write(path, json.dumps(RUNNING), 1_000_000_000)
    store = ExperimentStore(path)
    assert await store.reload()
    assert store.describe().startswith("1 running (sources)")

    # An editor truncates before it writes: the empty moment is not "no experiments".
    write(path, "", 2_000_000_000)
    assert not await store.reload()
    assert store.describe().startswith("1 running (sources)")

    # Half written: refused too. Then the whole edit is applied.
    stopped = json.dumps({"experiments": [{**RUNNING["experiments"][0], "state": "STOPPED"}]})
    write(path, stopped[: len(stopped) // 2], 3_000_000_000)
    assert not await store.reload()
    assert store.describe().startswith("1 running (sources)")
    write(path, stopped, 4_000_000_000)
    assert await store.reload()
    assert store.describe().startswith("0 running (none)")
