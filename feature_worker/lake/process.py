"""Running `python -m feature_worker sink` as a child process (tests, benchmarks, tools).

Settings travel in the environment (`env`, on top of this process's). `start` returns once the sink has
joined its group and sought its partitions to the lake's offsets (it writes a ready file then); `kill` is
SIGKILL, as in a crash; `stop` is SIGTERM: the buffer is appended first.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from feature_worker.child import ChildProcess


@dataclass
class SinkProcess(ChildProcess):
    """One batch sink process whose log and ready file live in `workdir`."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    stop_timeout_s: float = 60.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "sink.log"

    def start(self, timeout_s: float = 60.0) -> SinkProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        self._launch(["-m", "feature_worker", "sink", "--ready-file", str(ready)], self.env, ready.exists,
                     timeout_s, "batch sink")
        return self
