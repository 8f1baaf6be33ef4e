"""Who gets which variant: salted hashes of the user (or session) id, layers, traffic slices, a global holdout.

Every draw is ``sha256(salt + ":" + unit)``'s first 8 bytes as a fraction of 2**64, so an assignment is the same
in every process, after every restart and on every machine (Python's `hash` is salted per process: never used
here). The unit is the user id, or ``"session:" + session_id`` for calls without a user (context-only pages), so a
session sees one variant; a call with neither is in no experiment.

- Holdout: units whose draw under the holdout salt is below `holdout` are in no experiment (variant "holdout").
- Layers: each layer draws under its own salt (``"layer:" + name``); an experiment of the layer takes the units
  whose draw falls in its slice ``[traffic_start, traffic_start + traffic)``. Slices of running experiments in one
  layer never overlap (`model.check_file`), and draws of different layers are independent, so experiments in
  two layers share users without their assignments being correlated.
- Variant: inside the experiment a third draw, under the experiment's salt, picks the variant by weight.

The test vectors in `tests/server/test_experiments.py` pin these draws.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from protos.aisle.v1 import experiments_pb2
from server.experiments.model import INTERLEAVING, RUNNING, Arm, arms, layer_of, mode_of, state_of
from server.pipeline import Pipeline

HOLDOUT = "holdout"
DEFAULT = "default"
_SCALE = float(2**64)


def draw(salt: str, unit: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, unit)."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def unit_of(user_id: str, session_id: str) -> str:
    """What is assigned: the user, else the session, else nothing ("")."""
    if user_id:
        return user_id
    return f"session:{session_id}" if session_id else ""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One request's variants."""

    #: RecommendResponse.variant: "exp/variant" pairs joined by ";", or "default", or "holdout".
    label: str
    #: (experiment, variant) per experiment the unit is in ("interleaved" for an interleaving experiment).
    experiments: tuple[tuple[str, str], ...] = ()
    #: The serving configuration (None: the default).
    pipeline: Pipeline | None = None
    #: An interleaving experiment: its name and its two arms (each already merged with the other layers').
    interleave: tuple[str, Arm, Arm] | None = None


NOT_ASSIGNED = Assignment(DEFAULT)
HELD_OUT = Assignment(HOLDOUT)


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    start: float
    end: float
    salt: str
    arms: tuple[Arm, ...]
    interleaving: bool


def merge(first: Pipeline | None, second: Pipeline | None) -> Pipeline | None:
    """Field by field: `first`'s setting where it has one, else `second`'s (layers should change different
    fields; where two set the same one, the layer first by name wins)."""
    if first is None:
        return second
    if second is None:
        return first
    return replace(
        first,
        use_ranker=first.use_ranker if first.use_ranker is not None else second.use_ranker,
        weights=first.weights if first.weights is not None else second.weights,
        sources=first.sources if first.sources is not None else second.sources,
        max_per_category=first.max_per_category
        if first.max_per_category is not None
        else second.max_per_category,
        bundle_version=first.bundle_version or second.bundle_version,
    )


class Assigner:
    """Assignments under one experiments file (its running experiments). Immutable: a change builds a new one."""

    def __init__(self, spec: experiments_pb2.ExperimentsFile) -> None:
        self.holdout = spec.holdout
        self.holdout_salt = spec.holdout_salt or HOLDOUT
        layers: dict[str, list[_Slot]] = {}
        for experiment in spec.experiments:
            if state_of(experiment) != RUNNING:
                continue
            slot = _Slot(
                experiment.name,
                experiment.traffic_start,
                experiment.traffic_start + experiment.traffic,
                experiment.salt or experiment.name,
                arms(experiment),
                mode_of(experiment) == INTERLEAVING,
            )
            layers.setdefault(layer_of(experiment), []).append(slot)
        self.layers = tuple((f"layer:{name}", tuple(slots)) for name, slots in sorted(layers.items()))

    def assign(self, unit: str) -> Assignment:
        """The unit's variants (`NOT_ASSIGNED` without a unit or without running experiments)."""
        if not unit or not self.layers:
            return NOT_ASSIGNED
        if self.holdout > 0.0 and draw(self.holdout_salt, unit) < self.holdout:
            return HELD_OUT
        pairs: list[tuple[str, str]] = []
        pipeline: Pipeline | None = None
        interleave: tuple[str, Arm, Arm] | None = None
        for salt, slots in self.layers:
            position = draw(salt, unit)
            for slot in slots:
                if slot.start <= position < slot.end:
                    if slot.interleaving:
                        pairs.append((slot.name, "interleaved"))
                        interleave = (slot.name, slot.arms[0], slot.arms[1])
                    else:
                        pick = draw(slot.salt, unit)
                        arm = next((a for a in slot.arms if pick < a.upto), slot.arms[-1])
                        pairs.append((slot.name, arm.name))
                        pipeline = merge(pipeline, arm.pipeline)
                    break
        if not pairs:
            return NOT_ASSIGNED
        if interleave is not None:
            name, a, b = interleave
            interleave = (
                name,
                replace(a, pipeline=merge(a.pipeline, pipeline)),
                replace(b, pipeline=merge(b.pipeline, pipeline)),
            )
        return Assignment(";".join(f"{e}/{v}" for e, v in pairs), tuple(pairs), pipeline, interleave)
