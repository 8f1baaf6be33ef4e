"""Snapshots of the embedded server's in-process state, so that a restart replays only the journal's tail.

A snapshot holds the catalog, the customer records, every user's features (with their applied event ids) and
the item counters (popularity, trending, co-visitation, the stream clock), as they are after the journal's
first `journal_offset` bytes. On start the server loads the newest snapshot and replays the journal from that
offset (`EmbeddedIngest.recover`): the state is exactly the one a replay of the whole journal gives (dicts are
written and rebuilt in their iteration order, floats as 64-bit doubles, features in their stored form, which
the fold guarantees folds on exactly), and the start-up time is bounded by the snapshot's size and the tail
(`AISLE_SNAPSHOT_EVERY_MB` of journal at most).

With encryption on, the customer records and the features are sealed with the customer's data key, as in the
journal: erasing a customer destroys the key, so a snapshot taken before the erasure cannot bring them back (a
load skips what it cannot open). Item counters hold no customer's data and are written in clear.

File: `snapshot.bin` in the data directory, written whole to a temporary file, fsynced and renamed over the
previous one, so a crash while writing leaves the previous snapshot. Layout: the magic `AISLESN1`, then
sections of `<u64 length><bytes>` (lists inside a section start with their `<u64 count>`), then the CRC32 of everything before it (a damaged snapshot is ignored and
the journal replayed whole).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from feature_worker.catalog import Catalog
from feature_worker.privacy.keystores.file import KeyFile
from feature_worker.privacy.sealing import FEATURES, USER, Unreadable, open_sealed, seal
from feature_worker.privacy.vault import Vault
from feature_worker.state import UserState
from feature_worker.stores.memory import Frozen, MemoryFeatures
from feature_worker.users import UserDirectory
from protos.aisle.v1 import catalog_pb2, users_pb2

log = logging.getLogger(__name__)

MAGIC = b"AISLESN1"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SEP = "\0"


class SnapshotDamaged(Exception):
    """The snapshot file is cut short or does not match its checksum (the journal is replayed whole instead)."""


@dataclass(slots=True)
class Sealer:
    """Seals and opens customers' data with their data keys (encryption on)."""

    vault: Vault
    keys: KeyFile

    def seal(self, user_id: str, field: bytes, data: bytes) -> bytes | None:
        wrapped = self.keys.get(user_id)
        if wrapped is None:
            return None  # no key: the customer's data cannot be kept (an erasure raced the snapshot)
        return seal(self.vault.cipher(user_id, wrapped), user_id, field, data)

    def open(self, user_id: str, field: bytes, data: bytes) -> bytes | None:
        wrapped = self.keys.get(user_id)
        if wrapped is None:
            return None
        try:
            return open_sealed(self.vault.cipher(user_id, wrapped), user_id, field, data)
        except Unreadable:
            return None


@dataclass(frozen=True, slots=True)
class State:
    """What a snapshot holds, as it was after `journal_offset` bytes of journal; later changes leave it alone."""

    journal_offset: int
    items: list[catalog_pb2.Item]
    records: list[users_pb2.User]
    features: Frozen


def freeze(journal_offset: int, catalog: Catalog, users: UserDirectory, store: MemoryFeatures) -> State:
    """The state now, taken on the event loop between two changes (milliseconds: lists of references and the
    store's copy-on-write view); `store.thaw()` once the snapshot is written. Catalog items and customer
    records are replaced whole on change, never changed in place, so references to them stay as they are."""
    return State(journal_offset, list(catalog.records()), list(users.records()), store.freeze())


def capture(state: State, sealer: Sealer | None) -> list[bytes]:
    """The sections of a snapshot of `state` (seconds for a large shop: run it in a thread)."""
    store = state.features
    sections = [_U64.pack(state.journal_offset)]
    sections.append(catalog_pb2.UpsertItemsRequest(items=state.items).SerializeToString())
    ids, records = [], []
    for user in state.records:
        data = user.SerializeToString()
        if sealer is not None:
            sealed = sealer.seal(user.user_id, USER, data)
            if sealed is None:
                continue
            data = sealed
        ids.append(user.user_id)
        records.append(data)
    sections += [_strings(ids), _blobs(records)]
    ids, features, applied = [], [], []
    for user_id, user_state in store.users.items():
        data = user_state.to_bytes()
        if sealer is not None:
            sealed = sealer.seal(user_id, FEATURES, data)
            if sealed is None:
                continue
            data = sealed
        ids.append(user_id)
        features.append(data)
        applied.append(user_state.applied_to_bytes())
    sections += [_strings(ids), _blobs(features), _blobs(applied)]
    sections += _weights(store.popularity)
    days = list(store.trend)
    sections.append(array("q", days).tobytes())
    for day in days:
        sections += _weights(store.trend[day])
    sections.append(_strings(list(store.covis)))
    sections += [
        _blob_of_weights(store.covis.values(), keys=True),
        _blob_of_weights(store.covis.values(), keys=False),
    ]
    sections.append(_U64.pack(store.clock_ms))
    return sections


def write(path: Path, sections: list[bytes]) -> int:
    """Write the snapshot to `path` atomically (temporary file, fsync, rename); returns its size in bytes."""
    tmp = path.with_suffix(".tmp")
    crc = zlib.crc32(MAGIC)
    size = len(MAGIC)
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        for section in sections:
            head = _U64.pack(len(section))
            crc = zlib.crc32(section, zlib.crc32(head, crc))
            f.write(head)
            f.write(section)
            size += len(head) + len(section)
        f.write(_U32.pack(crc))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return size + _U32.size


def load(
    path: Path, catalog: Catalog, users: UserDirectory, store: MemoryFeatures, sealer: Sealer | None
) -> int:
    """Fill the (empty) state from the snapshot at `path`; returns the journal offset it covers.

    Raises `SnapshotDamaged` (and changes nothing) when the file is cut short or fails its checksum.
    Customers' data that cannot be opened (their key is gone: erased) is skipped.
    """
    it = _sections(path.read_bytes())
    offset = _U64.unpack(next(it))[0]
    catalog.upsert_many(catalog_pb2.UpsertItemsRequest.FromString(next(it)).items)
    for user_id, record in zip(_read_strings(next(it)), _read_blobs(next(it)), strict=True):
        if sealer is not None:
            opened = sealer.open(user_id, USER, record)
            if opened is None:
                continue
            record = opened
        users.upsert(users_pb2.User.FromString(record))
    ids, features, applied = _read_strings(next(it)), _read_blobs(next(it)), _read_blobs(next(it))
    states = store.users
    for user_id, blob, ids_blob in zip(ids, features, applied, strict=True):
        if sealer is not None:
            opened = sealer.open(user_id, FEATURES, blob)
            if opened is None:
                continue
            blob = opened
        states[user_id] = UserState.from_bytes(blob, ids_blob)
    store.popularity = _read_weights(next(it), next(it))
    days = array("q")
    days.frombytes(next(it))
    store.trend = {day: _read_weights(next(it), next(it)) for day in days}
    items = _read_strings(next(it))
    names_blob, weights_blob = next(it), next(it)
    store.covis = {
        item: neighbours
        for item, neighbours in zip(items, _read_blob_of_weights(names_blob, weights_blob), strict=True)
    }
    store.clock_ms = _U64.unpack(next(it))[0]
    store.changed()
    return int(offset)


def covered(path: Path) -> int:
    """The journal offset the snapshot at `path` covers, read from its head (not checked: `load` checks)."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 2 * _U64.size)
    if len(head) < len(MAGIC) + 2 * _U64.size or not head.startswith(MAGIC):
        raise SnapshotDamaged("not a snapshot, or cut short")
    return int(_U64.unpack_from(head, len(MAGIC) + _U64.size)[0])


def _sections(data: bytes) -> Iterator[bytes]:
    if len(data) < len(MAGIC) + _U32.size or not data.startswith(MAGIC):
        raise SnapshotDamaged("not a snapshot, or cut short")
    body, (crc,) = data[: -_U32.size], _U32.unpack(data[-_U32.size :])
    if zlib.crc32(body) != crc:
        raise SnapshotDamaged("checksum mismatch")
    view = memoryview(body)
    pos = len(MAGIC)
    out = []
    while pos < len(body):
        (length,) = _U64.unpack_from(view, pos)
        pos += _U64.size
        out.append(bytes(view[pos : pos + length]))
        pos += length
    return iter(out)


def _strings(values: list[str]) -> bytes:
    # Ids hold no NUL (validation refuses control characters), so NUL separates them.
    return _U64.pack(len(values)) + _SEP.join(values).encode()


def _read_strings(data: bytes) -> list[str]:
    (count,) = _U64.unpack_from(data)
    return data[_U64.size :].decode().split(_SEP) if count else []


def _blobs(values: list[bytes]) -> bytes:
    return _U64.pack(len(values)) + array("Q", map(len, values)).tobytes() + b"".join(values)


def _read_blobs(data: bytes) -> list[bytes]:
    (count,) = _U64.unpack_from(data)
    lengths = array("Q")
    pos = _U64.size + 8 * count
    lengths.frombytes(data[_U64.size : pos])
    out = []
    for length in lengths:
        out.append(data[pos : pos + length])
        pos += length
    return out


def _weights(weights: dict[str, float]) -> list[bytes]:
    return [_strings(list(weights)), array("d", weights.values()).tobytes()]


def _read_weights(names: bytes, values: bytes) -> dict[str, float]:
    weights = array("d")
    weights.frombytes(values)
    return dict(zip(_read_strings(names), weights, strict=True))


def _blob_of_weights(maps: Iterable[dict[str, float]], keys: bool) -> bytes:
    """Many weight dicts as one section: their key lists (`keys`) or their values, each length-prefixed."""
    parts = []
    for weights in maps:
        parts.append(_strings(list(weights)) if keys else array("d", weights.values()).tobytes())
    return _blobs(parts)


def _read_blob_of_weights(names: bytes, values: bytes) -> Iterator[dict[str, float]]:
    for n, v in zip(_read_blobs(names), _read_blobs(values), strict=True):
        yield _read_weights(n, v)
