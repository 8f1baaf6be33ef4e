"""What every Aisle child process shares (the worker's and the server's runners): stop, kill, logs."""

from __future__ import annotations

import signal
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path


class ChildProcess(ABC):
    """A started `proc` and its `log_path`; subclasses know how to start themselves."""

    proc: subprocess.Popen[bytes] | None
    #: Seconds a graceful stop may take before the child is killed.
    stop_timeout_s: float = 20.0

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Where the child's stdout and stderr go."""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float | None = None) -> None:
        """SIGTERM (a graceful shutdown) by default; SIGKILL once `timeout_s` has passed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(self.stop_timeout_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
