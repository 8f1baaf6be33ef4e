"""`python -m server --workers N`: N server processes on one port, supervised by the process that started them.

Each worker is a full Kafka + Redis server (`server.app.serve`) in a process of its own (multiprocessing
"spawn": a fresh interpreter, no state copied by fork), bound to the same host and port with SO_REUSEPORT, so
the kernel spreads incoming connections (not calls: one client connection stays on one process) over them.
The settings are read once by the supervisor and handed to every worker.

- **Port.** The supervisor binds the port first (SO_REUSEPORT, never listening) and holds it until every worker
  is serving, so ``--port 0`` gives one free port that all of them share and nothing else takes it meanwhile.
- **Start-up.** The port file and the "serving" line come once every worker answers. A worker that dies before
  that is a start-up error (bad settings, Kafka or Redis unreachable): the others are stopped and the supervisor
  exits 1.
- **A worker that dies later** is logged with its exit code and restarted after a backoff (1 s, doubling to
  30 s; back to 1 s once a worker has served for a minute), so one crash costs the connections it held, not
  the service. The other workers keep serving meanwhile.
- **SIGTERM or SIGINT** to the supervisor: SIGTERM to every worker, each finishes its in-flight calls (the
  server's own graceful stop), then the supervisor exits 0; a worker still running after `STOP_TIMEOUT_S` is
  killed and the exit code is 1. Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process group;
  the supervisor relays it) and get SIGTERM if the supervisor itself dies.
- **Metrics.** Each worker writes its counts to a snapshot file in a temporary directory every second; the
  supervisor serves one `/metrics` (`AISLE_METRICS_PORT`) that sums them, with per-process series labelled
  by pid (`server.metrics`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from server.affinity import pin_process, worker_cpus
from server.config import ServerSettings
from server.dashboard.series import Sampler
from server.dashboard.web import Dashboard
from server.metrics import ServerMetrics, SnapshotCollector, read_snapshots, serve_metrics, write_snapshots

log = logging.getLogger(__name__)

#: Seconds every worker gets to finish its calls and close after SIGTERM, before it is killed.
STOP_TIMEOUT_S = 30.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
#: A worker that served this long resets the backoff: its death is news, not a crash loop.
HEALTHY_AFTER_S = 60.0
_PR_SET_PDEATHSIG = 1


def run_worker(settings: ServerSettings, snapshot_dir: str, ready: Connection, index: int) -> None:
    """One worker process: serve until SIGTERM; tell the supervisor its pid once serving."""
    import uvloop

    from server.app import serve

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [worker {index} %(process)d] %(name)s: %(message)s",
    )
    every = settings.cpu_list  # parsed once
    if every:  # before serving starts any thread of its own: they inherit it
        cpus = worker_cpus(every, index)
        pin_process(cpus)
        log.info("pinned to CPU %s", ",".join(map(str, cpus)))
    metrics = ServerMetrics()

    async def main() -> None:
        writer = asyncio.create_task(write_snapshots(metrics, Path(snapshot_dir)))
        try:
            await serve(settings, metrics, lambda port: ready.send(os.getpid()), signals=(signal.SIGTERM,))
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    uvloop.run(main())


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies, so no orphan keeps serving the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: orphans are possible, the supervisor's SIGTERM still works
        return
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    """One worker position: its current process, when it started, how many quick deaths in a row."""

    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts `settings.workers` servers on one port, restarts those that die, stops them all on a signal."""

    def __init__(self, settings: ServerSettings, on_ready: Callable[[int], None]) -> None:
        self.settings = settings
        self.on_ready = on_ready
        self.restarts = 0
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._worker_settings = settings
        self._snapshot_dir = Path()

    def live_pids(self) -> set[int]:
        return {s.pid for s in self._slots if s.pid and s.process is not None and s.process.is_alive()}

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the process's exit code."""
        wake_read, wake_write = socket.socketpair()
        wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._snapshot_dir = Path(tempfile.mkdtemp(prefix="aisle-metrics-"))
        holder = self._reserve_port()
        try:
            port = holder.getsockname()[1]
            self._worker_settings = self.settings.model_copy(update={"port": port, "workers": 1})
            if self.settings.metrics_port:
                serve_metrics(
                    SnapshotCollector(self._snapshot_dir, self.live_pids, lambda: self.restarts),
                    self.settings.metrics_host,
                    self.settings.metrics_port,
                )
            if self.settings.dashboard_port:
                sampler = Sampler(
                    partial(read_snapshots, self._snapshot_dir), self.settings.dashboard_worker_metrics
                )
                Dashboard(sampler, self.settings.dashboard_host, self.settings.dashboard_port).start()
            for slot in self._slots:
                self._spawn(slot)
            if not self._wait_all_ready(wake_read):  # a worker died, or a signal came during start-up
                return self._stop_all(failed=not self._stopping)
            holder.close()
            log.info(
                "%d server workers on %s:%d, pids %s",
                len(self._slots),
                self.settings.host,
                port,
                " ".join(str(s.pid) for s in self._slots),
            )
            self.on_ready(port)
            self._supervise(wake_read)
            return self._stop_all(failed=False)
        finally:
            holder.close()
            signal.set_wakeup_fd(previous_fd)
            wake_read.close()
            wake_write.close()
            shutil.rmtree(self._snapshot_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.live_pids()))
        self._stopping = True

    def _reserve_port(self) -> socket.socket:
        host = self.settings.host.strip("[]")
        family, kind, proto, _, address = socket.getaddrinfo(
            host, self.settings.port, type=socket.SOCK_STREAM
        )[0]
        holder = socket.socket(family, kind, proto)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind(address)
        except OSError:
            holder.close()
            raise
        return holder

    def _spawn(self, slot: _Slot) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_worker,
            args=(self._worker_settings, str(self._snapshot_dir), send, slot.index),
            name=f"aisle-server-{slot.index}",
        )
        process.start()
        send.close()
        slot.process, slot.ready, slot.pid = process, receive, 0
        slot.started, slot.restart_at = time.monotonic(), None

    def _wait_all_ready(self, wake: socket.socket) -> bool:
        """Wait until every worker has said it serves; False if one died first or a signal came."""
        while not self._stopping and any(s.pid == 0 for s in self._slots):
            pending = [s for s in self._slots if s.pid == 0]
            waitables: list[object] = [wake]
            for s in pending:
                assert s.process is not None and s.ready is not None
                waitables += [s.ready, s.process.sentinel]
            wait(waitables)  # type: ignore[arg-type]
            self._drain(wake)
            for s in pending:
                assert s.process is not None
                if self._read_ready(s):
                    continue
                if not s.process.is_alive():
                    log.error(
                        "server worker %d exited with code %s before it was serving; stopping",
                        s.index,
                        s.process.exitcode,
                    )
                    return False
        return not self._stopping

    def _read_ready(self, slot: _Slot) -> bool:
        assert slot.ready is not None
        try:
            if slot.ready.poll():
                slot.pid = int(slot.ready.recv())
                return True
        except (EOFError, OSError):
            pass
        return False

    def _supervise(self, wake: socket.socket) -> None:
        """Until a signal: notice deaths, restart after the backoff, note replacements that serve."""
        while not self._stopping:
            now = time.monotonic()
            waitables: list[object] = [wake]
            deadlines = []
            for s in self._slots:
                if s.restart_at is not None:
                    deadlines.append(s.restart_at)
                elif s.process is not None:
                    waitables.append(s.process.sentinel)
                    if s.pid == 0 and s.ready is not None:
                        waitables.append(s.ready)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            wait(waitables, timeout)  # type: ignore[arg-type]
            self._drain(wake)
            if self._stopping:
                return
            now = time.monotonic()
            for s in self._slots:
                if s.restart_at is not None:
                    if now >= s.restart_at:
                        log.info("restarting server worker %d", s.index)
                        self.restarts += 1
                        self._spawn(s)
                    continue
                assert s.process is not None
                if s.pid == 0 and self._read_ready(s):
                    log.info("server worker %d serving again, pid %d", s.index, s.pid)
                if not s.process.is_alive():
                    self._schedule_restart(s, now)

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        assert slot.process is not None
        slot.process.join()
        slot.failures = 0 if now - slot.started >= HEALTHY_AFTER_S else slot.failures + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, slot.failures - 1))
        log.error(
            "server worker %d (pid %s) exited with code %s; restarting it in %.0f s",
            slot.index,
            slot.pid or slot.process.pid,
            slot.process.exitcode,
            delay,
        )
        slot.restart_at = now + delay
        slot.process, slot.pid = None, 0
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None

    @staticmethod
    def _drain(wake: socket.socket) -> None:
        wake.setblocking(False)
        try:
            while wake.recv(512):
                pass
        except BlockingIOError:
            pass

    def _stop_all(self, failed: bool) -> int:
        """SIGTERM every worker, wait, kill stragglers; 0 if all stopped cleanly (and nothing failed)."""
        processes = [s.process for s in self._slots if s.process is not None]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        clean = not failed
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error(
                    "server worker pid %s did not stop within %.0f s; killing it", process.pid, STOP_TIMEOUT_S
                )
                process.kill()
                process.join()
                clean = False
            elif process.exitcode != 0 and not failed:
                log.error(
                    "server worker pid %s exited with code %s while stopping", process.pid, process.exitcode
                )
                clean = False
        for slot in self._slots:
            if slot.ready is not None:
                slot.ready.close()
        log.info("all server workers stopped")
        return 0 if clean else 1
