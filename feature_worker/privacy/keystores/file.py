"""The embedded server's key store: one file in the data directory, `keys.txt`, held in memory too.

Layout: one line per customer, `<user_id>\\t<base64 of the wrapped key>\\n` (user ids never hold control
characters: `validation.check_id`). New keys are appended and fsynced before the call that needs them goes
on (a journal record sealed with a key that a crash lost could never be read again); a torn last line is cut
off on open. Destroying a key rewrites the whole file without it (written beside, fsynced, renamed over the
old one, directory fsynced), so the key is gone from the file, not just marked: from then on nothing sealed
with it, in the journal or in a backup of it, can be read. (A filesystem may keep freed blocks on the disk
until they are reused; put the data directory on an encrypted volume to cover that too.)

Thread-safe: the server's event loop creates and destroys keys, the batch store's thread reads them.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Collection, Mapping
from pathlib import Path

from feature_worker.errors import StoreUnavailable
from feature_worker.privacy.keystores.base import KeyStore


class FileKeyStore(KeyStore):
    """Wrapped keys in `path`, mirrored in a dict."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        good_end = 0
        if path.exists():
            data = path.read_bytes()
            for line in data.split(b"\n")[:-1]:  # the last piece is empty, or a torn line
                user, _, wrapped = line.decode().partition("\t")
                self._keys[user] = base64.b64decode(wrapped)
                good_end += len(line) + 1
            if good_end != len(data):
                with open(path, "r+b") as f:
                    f.truncate(good_end)
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime

    def __len__(self) -> int:
        return len(self._keys)

    def get_now(self, user_id: str) -> bytes | None:
        return self._keys.get(user_id)

    def create_many_now(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        with self._lock:
            new = {u: w for u, w in wrapped.items() if u not in self._keys}
            if new:
                lines = b"".join(f"{u}\t{base64.b64encode(w).decode()}\n".encode() for u, w in new.items())
                try:
                    self._file.write(lines)
                    self._file.flush()
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    raise StoreUnavailable(f"cannot write the key store {self.path}: {exc}") from exc
                self._keys.update(new)
            return {u: self._keys[u] for u in wrapped}

    def delete_user_now(self, user_id: str) -> bool:
        with self._lock:
            if user_id not in self._keys:
                return False
            keys = dict(self._keys)
            del keys[user_id]
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(b"".join(f"{u}\t{base64.b64encode(w).decode()}\n".encode() for u, w in keys.items()))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
                self._file.close()
                self._file = open(self.path, "ab")  # noqa: SIM115
            except OSError as exc:
                raise StoreUnavailable(f"cannot rewrite the key store {self.path}: {exc}") from exc
            self._keys = keys
            return True

    async def get_many(self, user_ids: Collection[str]) -> dict[str, bytes]:
        keys = self._keys
        return {u: keys[u] for u in user_ids if u in keys}

    async def create_many(self, wrapped: Mapping[str, bytes]) -> dict[str, bytes]:
        return self.create_many_now(wrapped)

    async def delete_user(self, user_id: str) -> bool:
        return self.delete_user_now(user_id)

    async def close(self) -> None:
        self._file.close()
