"""An append-only journal of everything that changes state, replayed on start.

Record layout: `<u32 payload length><u32 crc32 of kind+payload><u8 kind><payload>`, little-endian.
A record is written whole and flushed before the request that made it is answered, so a killed
process loses nothing it acknowledged. A torn last record (power loss, kill during write) fails its
length or CRC check and is cut off on open; the client was not answered for it, so nothing is lost
that was promised. With `fsync=True` the records also survive a machine crash, at a latency cost.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO

from feature_worker.errors import StoreUnavailable

_HEADER = struct.Struct("<IIB")
#: A record larger than this is corruption, not data (requests are capped far below it).
_MAX_RECORD = 64 * 1024 * 1024


class RecordKind(IntEnum):
    EVENTS = 1  # a TrackRequest holding the accepted, time-stamped events (encryption off)
    UPSERT_ITEMS = 2  # an UpsertItemsRequest
    DELETE_ITEMS = 3  # a DeleteItemsRequest
    UPSERT_USER = 4  # a User (encryption off)
    SEALED_EVENTS = 5  # a SealedBatch: each event sealed with its customer's data key
    SEALED_USER = 6  # a SealedRecord of a User
    ERASE_USER = 7  # the UTF-8 id of a customer erased here: replay drops what it held of them
    EXPOSURES = 8  # an ExposureBatch, only in the exposure journal (`server.experiments.exposures`)


class Journal:
    """The embedded server's durable log (the role Kafka plays in production)."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        good_end = self._scan_end()
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime
        if self._file.tell() != good_end:
            self._file.truncate(good_end)
            self._file.seek(good_end)

    def append(self, kind: RecordKind, payload: bytes) -> None:
        """Write one record and flush it to the OS (and the disk, with fsync)."""
        header = _HEADER.pack(len(payload), zlib.crc32(payload, zlib.crc32(bytes((kind,)))), kind)
        try:
            self._file.write(header + payload)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise StoreUnavailable(f"cannot write the journal {self.path}: {exc}") from exc

    @property
    def size(self) -> int:
        """The offset just past the last record written: what a snapshot taken now covers."""
        return self._file.tell()

    def replay(self, start: int = 0) -> Iterator[tuple[RecordKind, bytes]]:
        """Every complete record from byte `start` (a record boundary), oldest first."""
        with open(self.path, "rb") as f:
            f.seek(start)
            for kind, payload, _ in records(f):
                yield kind, payload

    def close(self) -> None:
        self._file.close()

    def _scan_end(self) -> int:
        """Offset just past the last intact record."""
        if not self.path.exists():
            return 0
        end = 0
        with open(self.path, "rb") as f:
            for _, _, end in records(f):
                pass
        return end


def records(f: BinaryIO) -> Iterator[tuple[RecordKind, bytes, int]]:
    """Complete records from `f`'s position: (kind, payload, end offset relative to that position).

    Stops before a torn or half-written record (a reader tailing a live journal retries from there).
    """
    read = f.read
    offset = 0
    while True:
        header = read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        length, crc, kind = _HEADER.unpack(header)
        if length > _MAX_RECORD or kind not in RecordKind._value2member_map_:
            return
        payload = read(length)
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != crc:
            return
        offset += _HEADER.size + length
        yield RecordKind(kind), payload, offset
