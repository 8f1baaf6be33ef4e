"""The experiments in force: a JSON file the server watches, changed by ExperimentService or by hand.

The file holds the protobuf JSON form of `aisle.v1.ExperimentsFile`. The server reads it at start and every
`poll_s` seconds after (when its modification time or size changed); ExperimentService writes it (atomically:
a temporary file renamed over it) and applies the change at once. A file that does not parse or does not pass
`model.check_file` is logged and ignored: the experiments in force stay. Each change builds a new `Assigner`
and swaps one reference, so a request reads either the old experiments or the new ones, never a mix.

Experiments that serve another bundle version (`ServingConfig.bundle_version`) have it loaded beside the
promoted one (`ModelRegistry.pin`) before they start; a version that will not load refuses the start
(ExperimentService) or, from the file, serves the promoted bundle instead (logged; exposures record the model
version that actually served).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from feature_worker.errors import InvalidArgument, NotFound
from protos.aisle.v1 import experiments_pb2
from server.experiments.assignment import Assigner
from server.experiments.errors import ExperimentConflict, ExperimentExists
from server.experiments.model import DRAFT, RUNNING, STOPPED, check_experiment, check_file, state_of
from server.tasks import stop

if TYPE_CHECKING:
    from server.retrieval.registry import ModelRegistry

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse(text: str) -> experiments_pb2.ExperimentsFile:
    """The file's text as a checked `ExperimentsFile` (`InvalidArgument` naming the problems)."""
    spec = experiments_pb2.ExperimentsFile()
    try:
        json_format.Parse(text or "{}", spec)
    except json_format.ParseError as exc:
        raise InvalidArgument([("experiments_file", str(exc))]) from exc
    check_file(spec)
    return spec


def dump(spec: experiments_pb2.ExperimentsFile) -> str:
    return json_format.MessageToJson(spec, indent=2, preserving_proto_field_name=True) + "\n"


class ExperimentStore:
    """Experiments in force, their `Assigner`, and the file that keeps them."""

    def __init__(self, path: Path | None, models: ModelRegistry | None = None, poll_s: float = 1.0) -> None:
        self.path = path
        self.models = models
        self.poll_s = poll_s
        self.spec = experiments_pb2.ExperimentsFile()
        #: What requests read: replaced whole on every change.
        self.assigner = Assigner(self.spec)
        self._stamp: tuple[int, int] | None = None
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    # -- reading the file ---------------------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    async def reload(self) -> bool:
        """Apply the file if it changed since last read; True when new experiments are in force."""
        async with self._lock:
            stamp = self._file_stamp()
            if stamp is None or stamp == self._stamp or self.path is None:
                return False
            self._stamp = stamp
            try:
                text = await asyncio.to_thread(self.path.read_text)
                if not text.strip():
                    # What an editor (or `echo > file`) leaves for a moment while it rewrites the file: reading it
                    # as "no experiments" would stop every running one until the next poll.
                    log.warning(
                        "experiments file %s is empty (being written?): the experiments in force stay",
                        self.path,
                    )
                    return False
                spec = parse(text)
            except (InvalidArgument, OSError) as exc:
                log.error("experiments file %s refused, the experiments in force stay: %s", self.path, exc)
                return False
            failures = await self._pin(spec)
            for version, reason in failures.items():
                log.error(
                    "experiments name bundle %s, which cannot be served (%s): its variants serve the "
                    "promoted bundle",
                    version,
                    reason,
                )
            self._apply(spec)
            log.info("experiments from %s: %s", self.path, self.describe())
            return True

    def describe(self) -> str:
        running = [e.name for e in self.spec.experiments if state_of(e) == RUNNING]
        return f"{len(running)} running ({', '.join(running) or 'none'}), holdout {self.spec.holdout:g}"

    # -- changes (ExperimentService) ----------------------------------------------------------------
    def list(self) -> experiments_pb2.ExperimentsFile:
        out = experiments_pb2.ExperimentsFile()
        out.CopyFrom(self.spec)
        return out

    async def create(self, experiment: experiments_pb2.Experiment) -> experiments_pb2.Experiment:
        """Add a new experiment (DRAFT unless it says RUNNING); names are never reused."""
        check_experiment(experiment)
        async with self._lock:
            if any(e.name == experiment.name for e in self.spec.experiments):
                raise ExperimentExists(f"an experiment named {experiment.name!r} exists")
            spec = self.list()
            added = spec.experiments.add()
            added.CopyFrom(experiment)
            added.state = RUNNING if state_of(experiment) == RUNNING else DRAFT
            added.started_ms = now_ms() if added.state == RUNNING else 0
            added.stopped_ms = 0
            await self._commit(spec)
            return self._find(experiment.name)

    async def start(self, name: str) -> experiments_pb2.Experiment:
        """DRAFT -> RUNNING (a running one stays as it is; a stopped one cannot restart: create another)."""
        async with self._lock:
            spec = self.list()
            experiment = self._find(name, spec)
            state = state_of(experiment)
            if state == STOPPED:
                raise ExperimentConflict(f"experiment {name!r} was stopped; create a new one to run it again")
            if state != RUNNING:
                experiment.state = RUNNING
                experiment.started_ms = now_ms()
                await self._commit(spec)
            return self._find(name)

    async def stop(self, name: str) -> experiments_pb2.Experiment:
        """RUNNING or DRAFT -> STOPPED: its users go back to the default configuration at once."""
        async with self._lock:
            spec = self.list()
            experiment = self._find(name, spec)
            if state_of(experiment) != STOPPED:
                experiment.state = STOPPED
                experiment.stopped_ms = now_ms()
                await self._commit(spec)
            return self._find(name)

    def _find(
        self, name: str, spec: experiments_pb2.ExperimentsFile | None = None
    ) -> experiments_pb2.Experiment:
        for experiment in (spec or self.spec).experiments:
            if experiment.name == name:
                return experiment
        raise NotFound(f"no experiment named {name!r}")

    async def _commit(self, spec: experiments_pb2.ExperimentsFile) -> None:
        try:
            check_file(spec)
        except InvalidArgument as exc:
            raise ExperimentConflict(str(exc)) from exc
        failures = await self._pin(spec)
        if failures:
            await self._pin(self.spec)  # back to what serves now
            version, reason = next(iter(failures.items()))
            raise ExperimentConflict(f"bundle version {version!r} cannot be served: {reason}")
        if self.path is not None:
            await asyncio.to_thread(_write_atomic, self.path, dump(spec))
            self._stamp = self._file_stamp()
        self._apply(spec)

    async def _pin(self, spec: experiments_pb2.ExperimentsFile) -> dict[str, str]:
        versions = {
            variant.config.bundle_version
            for experiment in spec.experiments
            if state_of(experiment) == RUNNING
            for variant in experiment.variants
            if variant.config.bundle_version
        }
        if self.models is None:
            return {version: "the server serves no model bundles (AISLE_BUNDLES_DIR)" for version in versions}
        return await self.models.pin(versions)

    def _apply(self, spec: experiments_pb2.ExperimentsFile) -> None:
        self.spec = spec
        self.assigner = Assigner(spec)

    # -- watching ----------------------------------------------------------------------------------
    def watch(self) -> None:
        """Re-read the file every `poll_s` seconds in the background."""
        if self._watcher is None and self.path is not None and self.poll_s > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.reload()
            except Exception:  # never let the watcher die
                log.exception("reading the experiments file failed")

    async def close(self) -> None:
        await stop(self._watcher)
        self._watcher = None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
