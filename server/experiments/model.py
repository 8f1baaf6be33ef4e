"""Checking experiments and turning their variants into `Pipeline`s.

An `aisle.v1.Experiment` (from the watched file or from ExperimentService) is validated field by field, with the
field paths of `InvalidArgument`, so a bad file or a bad CreateExperiment names what to fix. A checked experiment
becomes an `Arm` list: each variant with its cumulative share and its `Pipeline`, built once here so that a
request only looks one up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from feature_worker.errors import InvalidArgument
from protos.aisle.v1 import experiments_pb2
from server.pipeline import Pipeline
from server.recommender import MAX_K, BlendWeights
from server.retrieval.candidates import LEARNED, SOURCES

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Public source names (the proto's) -> `candidates.SOURCES` positions; "two_tower" is the learned source.
SOURCE_NAMES: dict[str, int] = {name: i for i, name in enumerate(SOURCES)} | {"two_tower": LEARNED}
DEFAULT_LAYER = "default"
MAX_VARIANTS = 16

AB = experiments_pb2.AB
INTERLEAVING = experiments_pb2.INTERLEAVING
DRAFT = experiments_pb2.DRAFT
RUNNING = experiments_pb2.RUNNING
STOPPED = experiments_pb2.STOPPED


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant ready to serve: users whose variant draw (in [0, 1)) is below `upto` and above the previous
    arm's get it."""

    name: str
    upto: float
    pipeline: Pipeline | None


def mode_of(experiment: experiments_pb2.Experiment) -> int:
    """AB or INTERLEAVING (unspecified counts as AB)."""
    return INTERLEAVING if experiment.mode == INTERLEAVING else AB


def state_of(experiment: experiments_pb2.Experiment) -> int:
    """DRAFT, RUNNING or STOPPED (unspecified counts as DRAFT)."""
    return experiment.state if experiment.state in (RUNNING, STOPPED) else DRAFT


def layer_of(experiment: experiments_pb2.Experiment) -> str:
    return experiment.layer or DEFAULT_LAYER


def check_experiment(experiment: experiments_pb2.Experiment, path: str = "experiment") -> None:
    """Raise `InvalidArgument` naming every problem of one experiment (alone; overlaps are `check_file`'s)."""
    problems: list[tuple[str, str]] = []
    if not _NAME.match(experiment.name):
        problems.append((f"{path}.name", "1 to 64 letters, digits, '_' or '-'"))
    if experiment.layer and not _NAME.match(experiment.layer):
        problems.append((f"{path}.layer", "1 to 64 letters, digits, '_' or '-' (or empty: 'default')"))
    if experiment.mode not in (0, AB, INTERLEAVING):
        problems.append((f"{path}.mode", f"unknown mode {experiment.mode}"))
    if experiment.state not in (0, DRAFT, RUNNING, STOPPED):
        problems.append((f"{path}.state", f"unknown state {experiment.state}"))
    start, traffic = experiment.traffic_start, experiment.traffic
    if not 0.0 < traffic <= 1.0:
        problems.append((f"{path}.traffic", f"must be in (0, 1], got {traffic}"))
    if not 0.0 <= start < 1.0 or start + traffic > 1.0 + 1e-9:
        problems.append(
            (f"{path}.traffic_start", f"the slice [{start}, {start + traffic}) must lie in [0, 1]")
        )
    if len(experiment.salt) > 64:
        problems.append((f"{path}.salt", "at most 64 characters"))
    variants = experiment.variants
    if not 2 <= len(variants) <= MAX_VARIANTS:
        problems.append((f"{path}.variants", f"must hold 2 to {MAX_VARIANTS} variants, got {len(variants)}"))
    if mode_of(experiment) == INTERLEAVING and len(variants) != 2:
        problems.append((f"{path}.variants", "interleaving mixes exactly two variants"))
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        where = f"{path}.variants[{i}]"
        if not _NAME.match(variant.name):
            problems.append((f"{where}.name", "1 to 64 letters, digits, '_' or '-'"))
        elif variant.name in seen:
            problems.append((f"{where}.name", f"{variant.name!r} is used twice"))
        seen.add(variant.name)
        if mode_of(experiment) == AB and not (variant.weight > 0.0 and np.isfinite(variant.weight)):
            problems.append((f"{where}.weight", f"must be > 0, got {variant.weight}"))
        problems.extend(_config_problems(variant.config, f"{where}.config"))
    if problems:
        raise InvalidArgument(problems)


def _config_problems(config: experiments_pb2.ServingConfig, path: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, weight in config.blend_weights.items():
        if name not in SOURCE_NAMES:
            problems.append(
                (f"{path}.blend_weights", f"unknown source {name!r}; one of {sorted(SOURCE_NAMES)}")
            )
        elif not np.isfinite(weight):
            problems.append((f"{path}.blend_weights[{name}]", "must be finite"))
    for i, name in enumerate(config.sources):
        if name not in SOURCE_NAMES:
            problems.append(
                (f"{path}.sources[{i}]", f"unknown source {name!r}; one of {sorted(SOURCE_NAMES)}")
            )
    if not -1 <= config.max_per_category <= MAX_K:
        problems.append((f"{path}.max_per_category", f"must be -1 to {MAX_K}, got {config.max_per_category}"))
    if config.bundle_version and not re.match(r"^[A-Za-z0-9._-]{1,128}$", config.bundle_version):
        problems.append((f"{path}.bundle_version", "letters, digits, '.', '_' and '-' (at most 128)"))
    return problems


def overlap(a: experiments_pb2.Experiment, b: experiments_pb2.Experiment) -> bool:
    """Whether two experiments of one layer claim some of the same users."""
    return (
        a.traffic_start < b.traffic_start + b.traffic - 1e-12
        and b.traffic_start < a.traffic_start + a.traffic - 1e-12
    )


def check_file(spec: experiments_pb2.ExperimentsFile) -> None:
    """Every experiment checked, names unique, running experiments of a layer on disjoint slices."""
    problems: list[tuple[str, str]] = []
    if not 0.0 <= spec.holdout < 1.0:
        problems.append(("holdout", f"must be in [0, 1), got {spec.holdout}"))
    names: set[str] = set()
    for i, experiment in enumerate(spec.experiments):
        try:
            check_experiment(experiment, f"experiments[{i}]")
        except InvalidArgument as exc:
            problems.extend(exc.violations)
        if experiment.name in names:
            problems.append((f"experiments[{i}].name", f"{experiment.name!r} is used twice"))
        names.add(experiment.name)
    running = [e for e in spec.experiments if state_of(e) == RUNNING]
    for i, a in enumerate(running):
        for b in running[i + 1 :]:
            if layer_of(a) == layer_of(b) and overlap(a, b):
                reason = (
                    f"{a.name!r} and {b.name!r} run in layer {layer_of(a)!r} on overlapping traffic slices"
                )
                problems.append(("experiments", reason))
    if problems:
        raise InvalidArgument(problems)


def pipeline_of(config: experiments_pb2.ServingConfig) -> Pipeline | None:
    """The `Pipeline` of a (checked) serving configuration; None when it changes nothing."""
    weights = None
    if config.blend_weights:
        vector = BlendWeights().vector().astype(np.float64)
        for name, weight in config.blend_weights.items():
            vector[SOURCE_NAMES[name]] = weight
        weights = vector
    pipeline = Pipeline(
        use_ranker=config.use_ranker if config.HasField("use_ranker") else None,
        weights=weights,
        sources=frozenset(SOURCE_NAMES[name] for name in config.sources) if config.sources else None,
        max_per_category=config.max_per_category or None,
        bundle_version=config.bundle_version or None,
    )
    fields = (
        pipeline.use_ranker,
        pipeline.weights,
        pipeline.sources,
        pipeline.max_per_category,
        pipeline.bundle_version,
    )
    return None if all(value is None for value in fields) else pipeline


def arms(experiment: experiments_pb2.Experiment) -> tuple[Arm, ...]:
    """The variants with cumulative shares (interleaving: equal halves, unused for assignment)."""
    weights = [v.weight if mode_of(experiment) == AB else 1.0 for v in experiment.variants]
    total = float(sum(weights))
    out, cumulative = [], 0.0
    for variant, weight in zip(experiment.variants, weights):
        cumulative += weight / total
        out.append(Arm(variant.name, cumulative, pipeline_of(variant.config)))
    last = out[-1]
    out[-1] = Arm(last.name, 1.0, last.pipeline)  # rounding never leaves a draw without a variant
    return tuple(out)
