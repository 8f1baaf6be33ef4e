"""Running `python -m feature_worker` as a child process (tests, benchmarks, tools).

Settings travel in the environment (`env`, on top of this process's). `start` returns once the worker
has joined its group and been assigned partitions (it writes a ready file then); `kill` is SIGKILL,
as in a crash; `stop` is SIGTERM, a graceful shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerProcess:
    """One feature worker process whose log and ready file live in `workdir`."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Run under cProfile, writing the profile here when the worker exits (after `stop`, not `kill`).
    profile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

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

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
