"""What every Aisle child process shares (the worker's and the server's runners): stop, kill, logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The development master key (`make master-key`), given to children whose settings name none.
DEV_MASTER_KEY = ROOT / ".keys" / "master.key"


def with_master_key(env: dict[str, str]) -> dict[str, str]:
    """`env` plus `AISLE_MASTER_KEY_FILE` of the development key (written if missing) when neither it nor
    `AISLE_ENCRYPTION` is set: tools, tests and the demo run encrypted, as production does."""
    if "AISLE_MASTER_KEY_FILE" in env or "AISLE_ENCRYPTION" in env:
        return env
    from feature_worker.privacy.sealing import write_master_key

    write_master_key(DEV_MASTER_KEY)
    return {**env, "AISLE_MASTER_KEY_FILE": str(DEV_MASTER_KEY)}


class ChildProcess(ABC):
    """A started `proc` and its `log_path`; subclasses know how to start themselves."""

    proc: subprocess.Popen[bytes] | None
    #: Seconds a graceful stop may take before the child is killed.
    stop_timeout_s: float = 20.0

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Where the child's stdout and stderr go."""

    def _launch(
        self, args: Sequence[str], env: dict[str, str], ready: Callable[[], bool], timeout_s: float, what: str
    ) -> None:
        """Run `python ARGS` from the repo root, output to `log_path`, until `ready()` holds.

        Raises RuntimeError with the log's tail when the child exits or `timeout_s` passes first; a child
        still running then is stopped (SIGTERM, SIGKILL after `stop_timeout_s`) and reaped before the error
        leaves, so a slow start is one failure and not a process left behind.
        """
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=with_master_key({**os.environ, **env}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        try:
            while not ready():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{what} did not start:\n{self.log_tail()}")
                time.sleep(0.05)
        except BaseException:
            # Whatever ends the wait (the timeout, an error in `ready`, an interrupt) ends the child too.
            self.stop()
            raise

    def _launch_on_port(
        self, port_file: Path, args: Sequence[str], env: dict[str, str], timeout_s: float, what: str
    ) -> int:
        """`_launch` for a child that binds a port and writes it to ``port_file`` (``--port-file``): the port,
        once written."""
        port_file.unlink(missing_ok=True)
        self._launch(
            [*args, "--port-file", str(port_file)],
            env,
            lambda: port_file.exists() and bool(port_file.read_text().strip()),
            timeout_s,
            what,
        )
        return int(port_file.read_text())

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
