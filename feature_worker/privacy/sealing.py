"""AES-256-GCM sealing of one customer's data, and the master key that wraps the customers' data keys.

A sealed value is `MAGIC (2 bytes) | nonce (12 bytes) | ciphertext and tag`. The associated data is the
field and the customer (`b"<field>\\0<user_id>"`), so a value moved to another customer or another field
fails to open instead of being read as theirs. `MAGIC` starts with a zero byte: no protobuf message
(field number 0 does not exist) and no JSON document starts with it, so readers tell sealed values from the
clear ones other producers write (`is_sealed`).

Data keys are 32 random bytes per customer, stored only wrapped: sealed by the master key with the customer
as associated data (`MasterKey.wrap`). The master key is 32 random bytes, base64 in a file readable by the
server, the workers and the sink only (`write_master_key`, `make master-key`); it never leaves the process.
Nonces are random (96 bits): a key seals far fewer than the 2^32 values NIST allows per key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from feature_worker.errors import AisleError

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
#: The first bytes of every sealed value (format version 1).
MAGIC = b"\x00\x01"
#: Bytes a sealed value adds to its plaintext: magic, nonce, GCM tag.
OVERHEAD = len(MAGIC) + NONCE_BYTES + 16

#: Associated-data fields: what a sealed value is.
EVENT = b"event"
USER = b"user"
FEATURES = b"features"
_WRAP = b"data-key"


class Unreadable(AisleError):
    """A sealed value that cannot be opened: its key was destroyed (erased customer), or it was altered."""

    status = "DATA_LOSS"


class MasterKeyError(AisleError):
    """The master key file is missing, unreadable or malformed (a start-up error)."""

    status = "FAILED_PRECONDITION"


def is_sealed(value: bytes) -> bool:
    return value[:2] == MAGIC


def _associated(field: bytes, user_id: str) -> bytes:
    return field + b"\0" + user_id.encode()


def seal(aead: AESGCM, user_id: str, field: bytes, plaintext: bytes) -> bytes:
    """Encrypt `plaintext` of `user_id` (what it is: `field`) under their data key."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + aead.encrypt(nonce, plaintext, _associated(field, user_id))


def open_sealed(aead: AESGCM, user_id: str, field: bytes, value: bytes) -> bytes:
    """The plaintext of a sealed value; `Unreadable` when the key, the customer or the field do not match."""
    if not is_sealed(value) or len(value) < OVERHEAD:
        raise Unreadable("not a sealed value")
    try:
        return aead.decrypt(value[2 : 2 + NONCE_BYTES], value[2 + NONCE_BYTES :], _associated(field, user_id))
    except InvalidTag as exc:
        raise Unreadable(f"a sealed {field.decode()} of a customer cannot be opened with their key") from exc


class MasterKey:
    """Wraps and unwraps the customers' data keys (AES-256-GCM, the customer as associated data)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        """Read a master key file (base64 of 32 bytes, as `write_master_key` writes it)."""
        try:
            text = path.read_text().strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise MasterKeyError(f"cannot read the master key file {path}: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the master key file %s is readable by other users; chmod 600 it", path)
        try:
            key = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise MasterKeyError(f"the master key file {path} is not base64: {exc}") from exc
        return cls(key)

    def new_data_key(self, user_id: str) -> tuple[bytes, AESGCM]:
        """A fresh data key for `user_id`: (its wrapped form, to store; its cipher, to use)."""
        key = AESGCM.generate_key(bit_length=256)
        return seal(self._aead, user_id, _WRAP, key), AESGCM(key)

    def unwrap(self, user_id: str, wrapped: bytes) -> AESGCM:
        """The cipher of a stored (wrapped) data key; `Unreadable` if it was not wrapped for `user_id` by us."""
        return AESGCM(open_sealed(self._aead, user_id, _WRAP, wrapped))


def write_master_key(path: Path) -> bool:
    """Write a new random master key to `path` (mode 600) unless one is there; True when written.

    Safe when several processes race: the file is created exclusively and filled before it is renamed
    into place, so a reader never sees a partial key.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process wrote one first: theirs wins
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True
