"""Fixtures shared by the server's test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.harness.server import ServerProcess


@pytest.fixture
def bundle_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """An embedded server watching ``tmp_path/bundles`` (nothing promoted yet), checking every 50 ms."""
    bundles_dir = tmp_path / "bundles"
    bundles_dir.mkdir()
    process = ServerProcess(
        tmp_path / "server", args=["--bundles", str(bundles_dir), "--bundle-poll-s", "0.05"]
    ).start()
    yield process, bundles_dir
    process.stop()
