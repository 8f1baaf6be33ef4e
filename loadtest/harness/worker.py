"""Running `python -m feature_worker [sink]` as a child process (tests, benchmarks, tools).

Settings travel in the environment (`env`, on top of this process's). `start` returns once the process
has joined its group and been assigned partitions (the sink: and sought them to the lake's offsets); it
writes a ready file then. `kill` is SIGKILL, as in a crash; `stop` is SIGTERM, a graceful shutdown (the
sink appends its buffer first).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.harness.children import ChildProcess


@dataclass
class WorkerProcess(ChildProcess):
    """One feature worker (or, with ``role="sink"``, batch sink) process whose log and ready file live in
    `workdir`."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    #: The command of `python -m feature_worker`: "" for the feature worker, "sink" for the batch sink.
    role: str = ""
    #: Run under cProfile, writing the profile here when the worker exits (after `stop`, not `kill`).
    profile: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    stop_timeout_s: float = 30.0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.role or 'worker'}.log"

    def start(self, timeout_s: float = 60.0) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ready = self.workdir / "ready"
        ready.unlink(missing_ok=True)
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        command = [
            *profiler,
            "-m",
            "feature_worker",
            *([self.role] if self.role else []),
            "--ready-file",
            str(ready),
        ]
        self._launch(command, self.env, ready.exists, timeout_s, f"feature worker {self.role}".strip())
        return self


def sink_process(workdir: Path, env: dict[str, str] | None = None) -> WorkerProcess:
    """The batch sink (`python -m feature_worker sink`): SIGTERM appends its whole buffer, so it gets longer
    to stop than a worker finishing one batch."""
    return WorkerProcess(workdir, env=dict(env or {}), role="sink", stop_timeout_s=60.0)
