"""Running `python -m feature_worker` as a child process (tests, benchmarks, tools).

Settings travel in the environment (`env`, on top of this process's). `start` returns once the worker
has joined its group and been assigned partitions (it writes a ready file then); `kill` is SIGKILL,
as in a crash; `stop` is SIGTERM, a graceful shutdown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from feature_worker.child import ChildProcess

ROOT = Path(__file__).resolve().parent.parent


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
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", str(self.profile)] if self.profile else []),
             "-m", "feature_worker", "--ready-file", str(ready)],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"feature worker did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        return self
