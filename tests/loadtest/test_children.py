"""A child process that never becomes ready is stopped and reaped when its start gives up."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtest.harness.children import ChildProcess


@dataclass
class _Sleeper(ChildProcess):
    """A child that sleeps and never says it is ready."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    stop_timeout_s: float = 10.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "sleeper.log"

    def start(self, timeout_s: float) -> None:
        self._launch(["-c", "import time; time.sleep(600)"], {}, lambda: False, timeout_s, "sleeper")


def test_a_start_that_times_out_leaves_no_child(tmp_path: Path) -> None:
    child = _Sleeper(tmp_path)
    with pytest.raises(RuntimeError, match="sleeper did not start"):
        child.start(timeout_s=0.2)
    assert child.proc is not None
    assert child.proc.poll() is not None
    assert not child.running()
    # Reaped, not a zombie: the pid is gone from the process table.
    with pytest.raises(ProcessLookupError):
        os.kill(child.proc.pid, 0)
