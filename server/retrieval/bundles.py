"""Model bundles on disk: the layout `trainer train` writes and the server reads, and promote/rollback.

A bundle is one directory, ``<bundles_dir>/<version>/``, written once and never changed afterwards:

- ``user_tower.onnx``: the user tower. Inputs ``items`` and ``types``, both int64 ``[batch, max_len]`` (or
  ``[batch, length]``: towers exported since the length became dynamic take any length up to ``max_len``, and
  the server then feeds only the real interactions): the user's latest interactions, oldest first and
  **left-padded** with 0 so the newest is always in the last column. ``items`` holds item indices (``1 + row`` of ``item_ids.txt``; 0 is padding, and an item unknown to
  the bundle is dropped from the sequence, not padded), ``types`` the ``aisle.v1.EventType`` numbers (0 with
  padding). Output ``user``: float32 ``[batch, dim]``.
- ``items.faiss``: the item tower's embeddings in a FAISS index (inner product: exact, an inverted file whose
  ``nprobe`` is in ``meta.json``'s ``index``, or HNSW with its ``ef_search``), FAISS label ``j`` being line ``j``
  of ``item_ids.txt`` (item index ``j + 1``).
- ``item_ids.txt``: the external item ids, one per line (UTF-8).
- ``ranker.onnx`` (optional): the learned re-ranker, input ``features`` float32 ``[rows, n]`` (the columns named by
  ``meta.json``'s ``ranker.features``, from ``server.ranking.features.FEATURES``), output ``scores`` float32
  ``[rows]``. A bundle without it is served with the blended score.
- ``transitions.npz`` (optional: a bundle without it loads and serves without that source): the item-transition
  model's neighbour lists (``trainer.models.transitions``, read by ``server.retrieval.transitions``).
- ``item_knn.npz`` (optional, the same layout): whole-history item neighbours (``trainer.models.item_knn``), read by
  the same class and served as the ``item_knn`` source.
- ``meta.json``: ``version``, ``created_at`` (UTC, ISO 8601), ``max_len``, ``dim``, ``index`` (the FAISS
  index kind and its measured recall), ``data`` (the data set's provenance), ``params``, ``metrics``
  (validation metrics), ``train_seconds``.

Which bundle is served is the file ``<bundles_dir>/CURRENT`` (one version name), replaced atomically; the
promotions so far are ``<bundles_dir>/HISTORY`` (one version per line, oldest first), so ``rollback`` can go
back one promotion at a time. This module never imports torch and lives with its reader, the server; the trainer imports it to write.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER_TOWER = "user_tower.onnx"
ITEM_INDEX = "items.faiss"
ITEM_IDS = "item_ids.txt"
META = "meta.json"
#: Optional: not in `FILES`, so a bundle without it is still complete.
TRANSITIONS = "transitions.npz"
#: Optional, like `TRANSITIONS` and in its layout: the whole-history item neighbours.
ITEM_KNN = "item_knn.npz"
CURRENT = "CURRENT"
HISTORY = "HISTORY"
#: The files a complete bundle holds; a directory missing one is not a bundle (yet).
FILES = (USER_TOWER, ITEM_INDEX, ITEM_IDS, META)
#: Optional: the learned re-ranker (``server.ranking.ranker``) and its ONNX input and output names. Its feature
#: names and validation figures are ``meta.json``'s ``ranker`` object.
RANKER = "ranker.onnx"
RANKER_INPUT = "features"
RANKER_OUTPUT = "scores"
#: ONNX input and output names of the user tower.
INPUT_ITEMS = "items"
INPUT_TYPES = "types"
OUTPUT_USER = "user"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BundleError(Exception):
    """A bundle or the promotion files are missing or inconsistent; the message says which and why."""


@dataclass(frozen=True, slots=True)
class BundlePaths:
    """The files of one bundle directory."""

    root: Path

    @property
    def version(self) -> str:
        return self.root.name

    @property
    def user_tower(self) -> Path:
        return self.root / USER_TOWER

    @property
    def item_index(self) -> Path:
        return self.root / ITEM_INDEX

    @property
    def item_ids(self) -> Path:
        return self.root / ITEM_IDS

    @property
    def ranker(self) -> Path:
        return self.root / RANKER

    @property
    def meta(self) -> Path:
        return self.root / META

    @property
    def transitions(self) -> Path:
        """The optional item-transition model (may be absent)."""
        return self.root / TRANSITIONS

    @property
    def item_knn(self) -> Path:
        """The optional whole-history item neighbours (may be absent)."""
        return self.root / ITEM_KNN

    def check(self) -> None:
        """Raise `BundleError` unless every file of a bundle is there."""
        missing = [name for name in FILES if not (self.root / name).is_file()]
        if missing:
            raise BundleError(f"{self.root} is not a complete bundle: missing {', '.join(missing)}")

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.meta}: cannot read bundle metadata: {exc}") from exc
        if not isinstance(meta, dict):
            raise BundleError(f"{self.meta}: metadata is not a JSON object")
        return meta

    def read_item_ids(self) -> list[str]:
        try:
            return self.item_ids.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise BundleError(f"{self.item_ids}: cannot read item ids: {exc}") from exc


def check_version(version: str) -> str:
    """``version`` if it is a usable directory name (letters, digits, ``.``, ``_``, ``-``), else `BundleError`."""
    if not _VERSION.match(version):
        raise BundleError(
            f"bad bundle version {version!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    return version


def bundle(bundles_dir: Path, version: str) -> BundlePaths:
    """The paths of bundle ``version`` under ``bundles_dir`` (not checked)."""
    return BundlePaths(Path(bundles_dir) / check_version(version))


def versions(bundles_dir: Path) -> list[str]:
    """Complete bundles under ``bundles_dir``, by name."""
    root = Path(bundles_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and all((p / name).is_file() for name in FILES)
    )


def current(bundles_dir: Path) -> str | None:
    """The promoted version, or None when nothing was promoted yet."""
    try:
        text = (Path(bundles_dir) / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return check_version(text) if text else None


def history(bundles_dir: Path) -> list[str]:
    """Every promotion so far, oldest first (a rollback removes the last one)."""
    try:
        text = (Path(bundles_dir) / HISTORY).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def promote(bundles_dir: Path, version: str) -> None:
    """Serve ``version`` from now on: servers watching ``bundles_dir`` swap to it at their next check.

    The bundle must be complete. ``HISTORY`` is written before ``CURRENT``, each through a temporary file and
    ``os.replace``, so a reader sees the old or the new pointer, never half of one.
    """
    root = Path(bundles_dir)
    bundle(root, version).check()
    past = history(root)
    if past and past[-1] == version:
        _write_atomic(root / CURRENT, version + "\n")
        return
    _write_atomic(root / HISTORY, "".join(v + "\n" for v in [*past, version]))
    _write_atomic(root / CURRENT, version + "\n")


def rollback(bundles_dir: Path) -> str:
    """Undo the last promotion and return the version served again; `BundleError` if there is none."""
    root = Path(bundles_dir)
    past = history(root)
    if len(past) < 2:
        raise BundleError(f"nothing to roll back to in {root}: {len(past)} promotion(s) so far")
    previous = past[-2]
    bundle(root, previous).check()
    _write_atomic(root / HISTORY, "".join(v + "\n" for v in past[:-1]))
    _write_atomic(root / CURRENT, previous + "\n")
    return previous


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
