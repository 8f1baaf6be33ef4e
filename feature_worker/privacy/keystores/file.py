"""The embedded server's key store: one file in the data directory, `keys.txt`, held in memory too.

Layout: one line per customer, `<user_id>\\t<base64 of the wrapped key>\\n` (user ids never hold control
characters: `validation.check_id`); a line of spaces is an erased customer. New keys are appended and fsynced
before the call that needs them goes on (a journal record sealed with a key that a crash lost could never be
read again); a torn last line is cut off on open. Destroying a key overwrites its line in place with spaces and
fsyncs, so the key is gone from the file, not just marked, in one small write whatever the number of customers:
from then on nothing sealed with it, in the journal or in a backup of it, can be read. When erased lines take
more room than live ones, opening the file rewrites it without them (beside, fsynced, renamed over). (A
filesystem that copies on write, or a disk that remaps blocks, may keep the old bytes until they are reused: put
the data directory on an encrypted volume to cover that too.)

`KeyFile` is the file and its one implementation, in plain calls (the journal reader and the snapshot's sealer,
which run in threads, use it directly); `FileKeyStore` puts it behind the async `KeyStore` interface for the
vault. Thread-safe: the server's event loop creates and destroys keys, the batch store's thread reads them.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from feature_worker.errors import StoreUnavailable
from feature_worker.privacy.keystores.base import KeyStore


def _line(user_id: str, wrapped: bytes) -> bytes:
    return f"{user_id}\t{base64.b64encode(wrapped).decode()}\n".encode()


class KeyFile:
    """Wrapped keys in `path`, mirrored in a dict with each line's place in the file; plain calls, nothing
    awaited."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        #: user -> (offset, length) of their line.
        self._lines: dict[str, tuple[int, int]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes() if path.exists() else b""
        offset = dead = 0
        for line in data.split(b"\n")[:-1]:  # the last piece is empty, or a torn line
            if line.strip():
                user, _, wrapped = line.decode().partition("\t")
                self._keys[user] = base64.b64decode(wrapped)
                self._lines[user] = (offset, len(line) + 1)
            else:
                dead += len(line) + 1
            offset += len(line) + 1
        if dead > offset - dead:
            self._rewrite()
        elif offset != len(data):
            with open(path, "r+b") as f:
                f.truncate(offset)
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime
        self._end = self._file.tell()

    def __len__(self) -> int:
        return len(self._keys)

    def _rewrite(self) -> None:
        """The file with live lines only: written beside, fsynced, renamed over, directory fsynced."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        lines = {user: _line(user, wrapped) for user, wrapped in self._keys.items()}
        with open(tmp, "wb") as f:
            f.write(b"".join(lines.values()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        offset = 0
        for user, line in lines.items():
            self._lines[user] = (offset, len(line))
            offset += len(line)

    def get(self, user_id: str) -> bytes | None:
        """The customer's wrapped key; None when they have none."""
        return self._keys.get(user_id)

    def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        """As `KeyStore.get_many`."""
        keys = self._keys
        return {u: keys[u] for u in user_ids if u in keys}

    def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        """As `KeyStore.create_many`: the new lines are on disk (fsynced) when it returns."""
        with self._lock:
            new = {u: _line(u, w) for u, w in wrapped.items() if u not in self._keys}
            if new:
                try:
                    self._file.write(b"".join(new.values()))
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    raise StoreUnavailable(f"cannot write the key store {self.path}: {exc}") from exc
                for user, line in new.items():
                    self._keys[user] = wrapped[user]
                    self._lines[user] = (self._end, len(line))
                    self._end += len(line)
            return {u: self._keys[u] for u in wrapped}

    def delete_user(self, user_id: str) -> bool:
        """As `KeyStore.delete_user`: the key's line is overwritten with spaces and fsynced."""
        with self._lock:
            place = self._lines.get(user_id)
            if place is None:
                return False
            offset, length = place
            try:
                fd = os.open(
                    self.path, os.O_WRONLY
                )  # not the appending handle: O_APPEND would ignore the offset
                try:
                    os.pwrite(fd, b" " * (length - 1) + b"\n", offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StoreUnavailable(f"cannot erase a key in {self.path}: {exc}") from exc
            del self._keys[user_id], self._lines[user_id]
            return True

    def close(self) -> None:
        self._file.close()


class FileKeyStore(KeyStore):
    """`KeyFile` behind the `KeyStore` interface (the embedded server's key store): each method is one plain call
    of the core."""

    def __init__(self, path: Path) -> None:
        #: The keys and their one implementation; synchronous code (the journal reader, snapshots) uses it directly.
        self.file = KeyFile(path)

    async def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        return self.file.get_many(user_ids)

    async def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        return self.file.create_many(wrapped)

    async def delete_user(self, user_id: str) -> bool:
        return self.file.delete_user(user_id)

    async def close(self) -> None:
        self.file.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
