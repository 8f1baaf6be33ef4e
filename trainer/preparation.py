"""Data preparation for training: the protocol's training split, the vocabulary, the training windows and the
validation inputs (what `trainer.train` fits on and `trainer.export` checks the export with)."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.data.dataset import Dataset
from trainer.evaluation.protocols import Case, StaticSplit, leave_one_out, sample_cases, time_split
from trainer.models.sequences import (
    Vocabulary,
    Windows,
    build_vocabulary,
    left_pad,
    training_windows,
    user_streams,
)

PROTOCOLS = ("loo", "time-split", "none")


@dataclass(slots=True)
class Prepared:
    """Everything training needs, built from a data set and a protocol."""

    vocab: Vocabulary
    windows: Windows
    #: Validation inputs, left-padded to max_len, one row per case.
    valid_items: np.ndarray
    valid_types: np.ndarray
    #: Item index of each case's target (0 when the target is unknown to the vocabulary: always a miss).
    valid_targets: np.ndarray
    #: Item indices to exclude per case (the user's history).
    valid_history: list[np.ndarray]
    #: Target popularity (counts per item index) in the training windows, for negative sampling.
    popularity: np.ndarray


def training_split(dataset: Dataset, protocol: str) -> StaticSplit:
    """The events to learn from and the validation cases of ``protocol`` (see the module docstring)."""
    if protocol == "loo":
        return leave_one_out(dataset, "valid")
    if protocol == "time-split":
        return time_split(dataset, "valid")
    if protocol == "none":
        # The last new item of each user is held out for early stopping; everything before it is learned.
        return leave_one_out(dataset, "test")
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def case_inputs(
    events_by_user: dict[str, Any], cases: Sequence[Case], vocab: Vocabulary, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Left-padded (items, types), target indices and history indices of ``cases``.

    ``events_by_user`` maps a user to their `UserStream` of the events learned from, which for every protocol
    here are exactly the user's events before the target: the sequence the fold's ``recent`` holds then.
    """
    empty = np.zeros(0, dtype=np.int64)
    items = [events_by_user[c.user_id].items if c.user_id in events_by_user else empty for c in cases]
    types = [events_by_user[c.user_id].types if c.user_id in events_by_user else empty for c in cases]
    targets = np.asarray([vocab.encode(c.target) for c in cases], dtype=np.int64)
    history = [
        np.asarray([i for i in (vocab.encode(h) for h in c.history) if i], dtype=np.int64) for c in cases
    ]
    return left_pad(items, max_len), left_pad(types, max_len), targets, history


def prepare(
    dataset: Dataset, protocol: str, max_len: int, valid_cases: int = 25_000, seed: int = 0
) -> Prepared:
    """Vocabulary, training windows and validation inputs of ``dataset`` under ``protocol``."""
    split = training_split(dataset, protocol)
    vocab = build_vocabulary(dataset.items, dataset.events)
    streams = user_streams(split.train, vocab)
    windows = training_windows(streams.values(), max_len)
    cases = sample_cases(split.cases, valid_cases, seed) if len(split.cases) > valid_cases else split.cases
    v_items, v_types, v_targets, v_history = case_inputs(streams, cases, vocab, max_len)
    popularity = np.zeros(vocab.size + 1, dtype=np.float64)
    for targets, mask in zip(windows.targets, windows.mask, strict=True):
        np.add.at(popularity, targets[mask], 1.0)
    return Prepared(vocab, windows, v_items, v_types, v_targets, v_history, popularity)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
