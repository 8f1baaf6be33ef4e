"""A server process on loopback that tests start, stop, crash and restart by hand.

`ManagedProcess` holds what Kafka and Redis share: free ports, spawning into a session of its own, a state
file that lets another Python process (`python -m loadtest.harness.services down`) find and stop what `up` started, and
a stop that sends SIGTERM and then SIGKILL. Each backend is one module beside this one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

#: The repository root: `loadtest/harness/services/process.py` -> `.`.
REPO_ROOT = Path(__file__).resolve().parents[3]
#: Git-ignored: the Kafka jar cache and the state of what `python -m loadtest.harness.services up` started.
STATE_ROOT = REPO_ROOT / ".services"

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """Root of the errors of the development services."""


class ServiceStartError(ServiceError):
    """A server did not start or did not become ready in time; the message carries its log tail."""


class ServiceNotManaged(ServiceError):
    """The service runs elsewhere (its address came from the environment), so it cannot be stopped here."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel may hand it out again before the server binds it; `ManagedProcess.start` retries a first start
    with fresh ports when the server says the address is in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """`"host:port"` -> `("host", port)`; the first entry of a comma-separated bootstrap list."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    return host.strip("[]") or LOOPBACK, int(port)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages; empty if there is none yet."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a short-lived thread.

    Readiness checks use aiokafka, which is async, but `start()`/`restart()` are plain calls that chaos tests
    make from inside a running loop (pytest-asyncio), where `asyncio.run` refuses to run. A thread of its own
    with a loop of its own works from anywhere; the caller blocks until it is done, which is what we want.
    """
    import asyncio

    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=target, name="aisle-services-check", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# Children that must die with this Python process are spawned from this one long-lived thread, because
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a child spawned from
# an `asyncio.to_thread` worker would be killed when that pool shuts down. This thread lives until exit.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aisle-services-spawn")
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the kernel SIGKILL the child when its parent dies.

    This is what keeps a pytest run that is itself SIGKILLed (CI time-out, OOM) from leaving brokers behind;
    the fixtures' finalizers cover every other way a session ends. SIGKILL rather than SIGTERM because nobody
    is left to wait for a graceful shutdown, and their data lives in throwaway temp dirs.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot, or None if it is gone or a zombie.

    Stored beside the pid so that `down` never signals an unrelated process that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses
    if fields[0] == "Z":
        return None
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


class ManagedProcess(ABC):
    """One server process owned by this package, with everything it keeps in `workdir`.

    `workdir/service.json` holds the ports (picked once, on the first start, so a restart listens on the same
    ones and keeps the same data) and, while it runs, the pid and its start time. Constructing the same class
    on the same `workdir` in another Python process therefore sees the same server: that is how `down` and
    `status` work.

    With `die_with_parent=True` (the pytest fixtures) the server is killed by the kernel if this Python
    process dies without stopping it; with False (`python -m loadtest.harness.services up`) it outlives us.
    """

    #: Short name used in messages and as the workdir name under `.services/`.
    name: ClassVar[str]
    #: This package started the server, so it can stop and restart it (see `ExternalService`).
    managed: ClassVar[bool] = True
    #: Seconds a start may take before it fails with the log tail.
    start_timeout: ClassVar[float] = 60.0
    #: Seconds between SIGTERM and SIGKILL.
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, workdir: Path, *, die_with_parent: bool = True) -> None:
        self.workdir = workdir.resolve()
        self.die_with_parent = die_with_parent
        self._popen: subprocess.Popen[bytes] | None = None
        self._state: dict[str, Any] = self._read_state()

    # ----- what each backend provides

    @abstractmethod
    def _pick_ports(self) -> dict[str, int]:
        """Fresh ports for a first start, by role (e.g. `{"port": 6379}`)."""

    @abstractmethod
    def _prepare(self) -> None:
        """Write config files and initialise storage; runs before every start and must be idempotent."""

    @abstractmethod
    def _command(self) -> list[str]:
        """The argv of the server."""

    @abstractmethod
    def _wait_ready(self, deadline: float) -> None:
        """Return once clients can use the server; raise `ServiceStartError` after `deadline` (monotonic)."""

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, where both servers log; its tail is shown when a start fails."""
        return self.workdir / f"{self.name}.log"

    # ----- state

    @property
    def ports(self) -> dict[str, int]:
        """The ports by role; empty before the first start."""
        ports: dict[str, int] = self._state.get("ports", {})
        return ports

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        pid: int | None = self._state.get("pid")
        if pid is None:
            return None
        if self._popen is not None:
            return pid if self._popen.poll() is None else None
        return pid if _process_start_ticks(pid) == self._state.get("pid_start") else None

    def is_running(self) -> bool:
        """Whether the server process is alive (not whether it is ready)."""
        return self.pid is not None

    def _state_path(self) -> Path:
        return self.workdir / "service.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._state_path().read_text())
            return state
        except FileNotFoundError:
            return {}

    def _write_state(self) -> None:
        # Write then rename, so a `status` running at the same time never reads half a file.
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.replace(self._state_path())

    # ----- lifecycle

    def start(self) -> None:
        """Start the server and wait until it is ready; a no-op if it already runs.

        The first start picks free ports; later starts reuse them and the data in `workdir`. A first start
        that loses a race for its port retries with fresh ports (twice); a restart cannot, since clients hold
        the address.
        """
        if self.is_running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        first = not self.ports
        for attempt in range(3):
            if first:
                self._state = {"ports": self._pick_ports()}
            try:
                self._spawn_and_wait()
                return
            except ServiceStartError as exc:
                if not (first and attempt < 2 and "in use" in str(exc)):
                    raise

    def _spawn_and_wait(self) -> None:
        self._prepare()
        self._spawn()
        try:
            self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            self.kill()
            raise

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as out:
            popen_kwargs: dict[str, Any] = {
                "cwd": self.workdir,
                "stdin": subprocess.DEVNULL,
                "stdout": out,
                "stderr": subprocess.STDOUT,
                # Its own session and process group: Ctrl-C in the terminal that ran `up` or pytest does not
                # reach it, and stop() can signal the whole group.
                "start_new_session": True,
            }
            if self.die_with_parent:
                preexec = _die_with_parent(os.getpid())
                popen = _spawner.submit(
                    # Spawned from one dedicated thread (`_spawner`), which is what makes preexec_fn safe here.
                    lambda: subprocess.Popen(self._command(), preexec_fn=preexec, **popen_kwargs)  # noqa: PLW1509
                ).result()
            else:
                popen = subprocess.Popen(self._command(), **popen_kwargs)
        self._popen = popen
        self._state["pid"] = popen.pid
        self._state["pid_start"] = _process_start_ticks(popen.pid)
        self._write_state()

    def check_alive(self) -> None:
        """Raise `ServiceStartError` with the log tail if the server has exited."""
        if not self.is_running():
            raise ServiceStartError(self.failure_message(f"{self.name} exited during startup"))

    def failure_message(self, what: str) -> str:
        """`what`, the workdir and the last lines of the server's log."""
        tail = log_tail(self.log_path)
        return f"{what} (workdir {self.workdir}).\n--- last lines of {self.log_path} ---\n{tail}"

    def wait_for(self, check: Callable[[], bool], deadline: float, what: str, interval: float = 0.1) -> None:
        """Poll `check` until it returns True; fail with the log tail at `deadline` or if the server exits."""
        while True:
            self.check_alive()
            if check():
                return
            if time.monotonic() > deadline:
                raise ServiceStartError(self.failure_message(f"{self.name}: timed out waiting for {what}"))
            time.sleep(interval)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server: SIGTERM, then SIGKILL after `timeout` seconds (`stop_timeout` by default).

        Returns once the process is gone, so a `start()` right after can bind the same ports.
        """
        self._signal_and_wait(signal.SIGTERM, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its data in `workdir` stays for the next `start()`."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def wipe(self) -> None:
        """Stop the server, delete `workdir` and forget the ports: the next `start()` is a first start."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._state = {}

    def restart(self) -> None:
        """`stop()` then `start()` on the same ports and the same data dir."""
        self.stop()
        self.start()

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            if not self._wait_gone(pid, timeout) and sig != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self._wait_gone(pid, 10.0)
        self._popen = None
        if self._state.pop("pid", None) is not None:
            self._state.pop("pid_start", None)
            if self.workdir.exists():
                self._write_state()

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout)  # also reaps it, so no zombie holds the pid
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _process_start_ticks(pid) != self._state.get("pid_start"):
                return True
            time.sleep(0.1)
        return False

    def detach(self) -> None:
        """Let the server outlive this Python process (for `up`): forget the child without waiting for it.

        Popen warns (ResourceWarning) when a running child's handle is dropped; here that is the point.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._popen = None


class ExternalService:
    """A server that runs elsewhere, named by an environment variable: used as is, never started or stopped.

    It has the lifecycle methods of `ManagedProcess` so that fixtures hand out one shape; they raise
    `ServiceNotManaged`. Chaos tests check `service.managed` and skip.
    """

    managed: ClassVar[bool] = False

    def __init__(self, name: str, variable: str) -> None:
        self.name = name
        self.variable = variable

    def _refuse(self) -> None:
        raise ServiceNotManaged(
            f"{self.name} comes from ${self.variable}; it cannot be stopped or restarted here"
        )

    def is_running(self) -> bool:
        """Always True: it was reachable when we looked."""
        return True

    def start(self) -> None:
        """Refused: see the class docstring."""
        self._refuse()

    def stop(self, timeout: float | None = None) -> None:
        """Refused: see the class docstring."""
        self._refuse()

    def kill(self) -> None:
        """Refused: see the class docstring."""
        self._refuse()

    def restart(self) -> None:
        """Refused: see the class docstring."""
        self._refuse()
