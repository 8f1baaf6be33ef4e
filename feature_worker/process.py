"""Running `python -m feature_worker` as a child process (tests, benchmarks, tools).

Settings travel in the environment (`env`, on top of this process's). `start` returns once the worker
has joined its group and been assigned partitions (it writes a ready file then); `kill` is SIGKILL,
as in a crash; `stop` is SIGTERM, a graceful shutdown.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from feature_worker.child import ChildProcess


@dataclass
class WorkerProcess(ChildProcess):
    """One feature worker process whose log and ready file live in `workdir`."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Run under cProfile, writing the profile here when the worker exits (after `stop`, not `kill`).
    profile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    stop_timeout_s: float = 30.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def start(self, timeout_s: float = 60.0) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        self._launch([*profiler, "-m", "feature_worker", "--ready-file", str(ready)], self.env, ready.exists,
                     timeout_s, "feature worker")
        return self
