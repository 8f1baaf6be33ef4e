"""Evaluation protocols: which events a model learns from, and which interactions it must predict.

Every protocol predicts *new* items: a target is a user's interaction (view, click, cart or purchase) with an
item they never acted on before, and the items they did act on before (their history) are excluded from the
ranking, as in the published leave-one-out tables. Repeated interactions with known items are learned from but
never scored.

* ``loo`` (leave-one-out): a user's last new-item interaction is the test target, the one before it the
  validation target; the model learns from every user's events before that user's target (the events after a
  test target, all repeats, are dropped). Users with fewer than three new items are never scored and all their
  events are learned from. Time is not respected across users, exactly as in S3-Rec, ICLRec and BSARec.
* ``time-split``: one global cut-off; the model learns from every event before it and, for each user with
  history before it, predicts the first new item after it. The test cut-off leaves the last 10% of events, the
  validation cut-off the last 20% (validation targets come before the test cut-off).
* ``replay``: events before the cut-off (as in ``time-split``) are learned from at once; the events after it
  are replayed one at a time in time order, and before each new-item interaction of a user with history the
  model is asked to rank, then learns the event. Validation replays the window between the two cut-offs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from feature_worker.fold import acted_items
from protos.aisle.v1 import events_pb2
from trainer.data.dataset import INTERACTION_TYPES, Dataset

PROTOCOLS = ("loo", "replay", "time-split")
SPLITS = ("valid", "test")
#: Share of events after the test cut-off, and after the validation cut-off, of the time-based protocols.
TEST_SHARE = 0.10
VALID_SHARE = 0.20
#: Users need this many new-item interactions for leave-one-out: a test target, a validation target, a
#: history.
LOO_MIN_ITEMS = 3


@dataclass(frozen=True, slots=True)
class Case:
    """One prediction: rank every item for ``user_id`` except ``history``; ``target`` is the right answer."""

    user_id: str
    target: str
    #: The items the user acted on before the target, oldest first.
    history: tuple[str, ...]


@dataclass(slots=True)
class StaticSplit:
    """Learn from ``train`` (in time order), then answer every case.

    ``private`` events (``--strict``) enter only their own users' histories: never an item statistic, a count
    or a model's weights.
    """

    train: list[events_pb2.Event]
    cases: list[Case]
    private: list[events_pb2.Event] = field(default_factory=list)


@dataclass(slots=True)
class ReplaySplit:
    """Learn from ``warmup``, then for each stream event: answer its case (if any), then learn the event."""

    warmup: list[events_pb2.Event]
    stream: list[events_pb2.Event]
    #: Index in ``stream`` -> the case to answer just before that event is learned.
    cases: dict[int, Case] = field(default_factory=dict)


def new_item(event: events_pb2.Event, seen: set[str] | dict[str, None]) -> str | None:
    """The item an interaction makes new to its user, or None (not an interaction, or nothing new)."""
    if event.type not in INTERACTION_TYPES:
        return None
    for item in acted_items(event):
        if item not in seen:
            return item
    return None


def _by_user(events: Sequence[events_pb2.Event]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        out.setdefault(event.user_id, []).append(index)
    return out


def leave_one_out(dataset: Dataset, split: str = "test") -> StaticSplit:
    """The ``loo`` protocol (see the module docstring)."""
    _check_split(split)
    events = dataset.events
    # user -> index of their target event: it and their later events are not learned
    drop_from: dict[str, int] = {}
    cases: list[Case] = []
    for user, indices in _by_user(events).items():
        seen: dict[str, None] = {}
        targets: list[tuple[int, str, tuple[str, ...]]] = []
        for index in indices:
            target = new_item(events[index], seen)
            if target is not None:
                targets.append((index, target, tuple(seen)))
            for acted in acted_items(events[index]):
                seen.setdefault(acted, None)
        if len(targets) < LOO_MIN_ITEMS:
            continue
        index, item, history = targets[-1] if split == "test" else targets[-2]
        drop_from[user] = index
        cases.append(Case(user, item, history))
    train = [e for i, e in enumerate(events) if i < drop_from.get(e.user_id, len(events))]
    return StaticSplit(train, cases)


def strict_leave_one_out(dataset: Dataset, split: str = "test") -> StaticSplit:
    """``loo`` under the published papers' exact conditions (``trainer evaluate --strict``).

    Everything is learned from the *training part* (each user's events before their validation target); for
    the test split, each user's validation interaction (the target and the repeats up to the test target)
    enters only that user's own history (``private``), never the item statistics. The validation split is the
    same as plain ``loo``: its learned events are the training part already.
    """
    training = leave_one_out(dataset, "valid")
    if split == "valid":
        return training
    test = leave_one_out(dataset, "test")
    learned = {id(event) for event in training.train}
    private = [event for event in test.train if id(event) not in learned]
    return StaticSplit(training.train, test.cases, private)


def training_part(dataset: Dataset) -> Dataset:
    """``dataset`` without each user's validation and test interactions (and what follows them): what a model
    may learn from under ``--strict`` (`strict_leave_one_out`)."""
    return replace(
        dataset,
        events=leave_one_out(dataset, "valid").train,
        notes=[*dataset.notes, "training part only (--strict)"],
    )


def cutoffs(dataset: Dataset) -> tuple[int, int]:
    """(validation cut-off, test cut-off): the times that leave the last 20% and 10% of events after them."""
    events = dataset.events
    if not events:
        raise ValueError(f"{dataset.name} has no events")
    n = len(events)
    valid = events[min(n - 1, int(n * (1.0 - VALID_SHARE)))].ts_ms
    test = events[min(n - 1, int(n * (1.0 - TEST_SHARE)))].ts_ms
    return valid, test


def _window(dataset: Dataset, split: str) -> tuple[int, int]:
    _check_split(split)
    valid, test = cutoffs(dataset)
    return (valid, test) if split == "valid" else (test, 2**63 - 1)


def time_split(dataset: Dataset, split: str = "test") -> StaticSplit:
    """The ``time-split`` protocol (see the module docstring)."""
    start, end = _window(dataset, split)
    events = dataset.events
    train = [e for e in events if e.ts_ms < start]
    history: dict[str, dict[str, None]] = {}
    for event in train:
        seen = history.setdefault(event.user_id, {})
        for item in acted_items(event):
            seen.setdefault(item, None)
    cases: list[Case] = []
    done: set[str] = set()
    for event in events:
        if not start <= event.ts_ms < end or event.user_id in done:
            continue
        known = history.get(event.user_id)
        if not known:
            continue  # a new customer: no history to personalise from
        target = new_item(event, known)
        if target is not None:
            cases.append(Case(event.user_id, target, tuple(known)))
            done.add(event.user_id)
    return StaticSplit(train, cases)


def replay(dataset: Dataset, split: str = "test", users: int | None = None, seed: int = 0) -> ReplaySplit:
    """The ``replay`` protocol; with ``users``, only that many users (drawn with ``seed``) are scored."""
    start, end = _window(dataset, split)
    events = dataset.events
    warmup = [e for e in events if e.ts_ms < start]
    stream = [e for e in events if start <= e.ts_ms < end]
    scored = sample_users({e.user_id for e in stream}, users, seed)
    history: dict[str, dict[str, None]] = {}
    cases: dict[int, Case] = {}
    for event in warmup:
        seen = history.setdefault(event.user_id, {})
        for item in acted_items(event):
            seen.setdefault(item, None)
    for index, event in enumerate(stream):
        seen = history.setdefault(event.user_id, {})
        if seen and (scored is None or event.user_id in scored):
            target = new_item(event, seen)
            if target is not None:
                cases[index] = Case(event.user_id, target, tuple(seen))
        for item in acted_items(event):
            seen.setdefault(item, None)
    return ReplaySplit(warmup, stream, cases)


def sample_users(candidates: set[str], users: int | None, seed: int) -> set[str] | None:
    """``users`` of ``candidates`` drawn with ``seed`` (None: everyone)."""
    if users is None or users >= len(candidates):
        return None
    return set(random.Random(seed).sample(sorted(candidates), users))


def sample_cases(cases: list[Case], users: int | None, seed: int) -> list[Case]:
    """The cases of ``users`` users drawn with ``seed`` (all cases when None)."""
    chosen = sample_users({case.user_id for case in cases}, users, seed)
    return cases if chosen is None else [case for case in cases if case.user_id in chosen]


def static_split(dataset: Dataset, protocol: str, split: str, strict: bool = False) -> StaticSplit:
    if strict and protocol != "loo":
        raise ValueError(f"--strict applies to the loo protocol only, not {protocol!r}")
    if protocol == "loo":
        return strict_leave_one_out(dataset, split) if strict else leave_one_out(dataset, split)
    if protocol == "time-split":
        return time_split(dataset, split)
    raise ValueError(f"{protocol!r} is not a static protocol")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def chunks(events: Sequence[events_pb2.Event], size: int) -> Iterator[Sequence[events_pb2.Event]]:
    for lo in range(0, len(events), size):
        yield events[lo : lo + size]
