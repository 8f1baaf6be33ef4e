"""The issuer's public keys (a JWKS), by `kid`, from a file or an https URL, kept fresh.

A key set is immutable; a source swaps in a new one when the keys change, so a verifier can tell by
identity that what it verified before may no longer hold. Only asymmetric signing keys of the allowed
algorithms are kept: a symmetric (`oct`) key in a JWKS is refused outright, since a verifier holding it would
accept anyone who knows it; keys for other uses (`use: enc`) or other algorithms are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from server.auth.errors import AuthConfigError

log = logging.getLogger(__name__)

#: The only algorithms Aisle can be told to accept: asymmetric, so that the server holds no signing secret.
ASYMMETRIC = frozenset({"RS256", "ES256", "EdDSA"})
#: A JWKS larger than this is refused (real ones are a few KiB).
MAX_JWKS_BYTES = 1024 * 1024


def check_algorithms(names: Sequence[str]) -> frozenset[str]:
    """The allow-list, refusing `none`, HS* and anything else not asymmetric (a start-up error)."""
    refused = [name for name in names if name not in ASYMMETRIC]
    if refused or not names:
        raise AuthConfigError(
            f"auth_algorithms may only name {sorted(ASYMMETRIC)}, got {list(names)}: `none` and HMAC (HS*) "
            "tokens are never accepted"
        )
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class Key:
    """One verification key: the `alg` a token signed with it must declare, and the key itself."""

    kid: str
    alg: str
    key: Any


class KeySet:
    """Keys by `kid`. Built only by `parse_jwks`; replaced, never changed."""

    def __init__(self, keys: Mapping[str, Key]) -> None:
        self._keys = dict(keys)

    def get(self, kid: str) -> Key | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def parse_jwks(data: bytes, algorithms: frozenset[str]) -> KeySet:
    """A key set from JWKS JSON. Raises `AuthConfigError` for a malformed set, one with a symmetric key or
    one with no usable key."""
    if len(data) > MAX_JWKS_BYTES:
        raise AuthConfigError(f"the JWKS is {len(data)} bytes; at most {MAX_JWKS_BYTES} are read")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"the JWKS is not JSON: {exc}") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError('the JWKS has no "keys" list')
    keys: dict[str, Key] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise AuthConfigError(f"keys[{n}] is not an object")
        kid = entry.get("kid")
        if entry.get("kty") == "oct" or str(entry.get("alg", "")).upper().startswith("HS"):
            raise AuthConfigError(
                f"keys[{n}] (kid {kid!r}) is a symmetric key: only public keys may be trusted"
            )
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key published beside the signing keys (Keycloak does)
        if not isinstance(kid, str) or not kid:
            log.warning("JWKS keys[%d] has no kid: skipped (tokens are matched to keys by kid)", n)
            continue
        try:
            jwk = PyJWK(entry)
        except PyJWKError as exc:
            log.warning("JWKS key %r skipped: %s", kid, exc)
            continue
        if jwk.algorithm_name not in algorithms:
            log.warning("JWKS key %r is for %s, which is not accepted: skipped", kid, jwk.algorithm_name)
            continue
        if kid in keys:
            raise AuthConfigError(f"the JWKS has two keys with kid {kid!r}")
        keys[kid] = Key(kid, jwk.algorithm_name, jwk.key)
    if not keys:
        raise AuthConfigError(f"the JWKS has no usable signing key for {sorted(algorithms)}")
    return KeySet(keys)


class KeySource(Protocol):
    """Where the current key set comes from."""

    @property
    def keys(self) -> KeySet:
        """The current key set (the last good one)."""

    async def refresh_for(self, kid: str) -> None:
        """A token named an unknown `kid`: look again if allowed now (rotation), else return at once."""

    def start(self) -> None:
        """Keep the keys fresh in the background."""

    async def close(self) -> None:
        """Stop refreshing."""

    def describe(self) -> str:
        """Where the keys come from, for the start-up log."""


class _Refreshing(ABC):
    """The background loop shared by both sources: `_check()` every `interval_s`, errors logged."""

    interval_s: float
    _task: asyncio.Task[None] | None = None
    _keys: KeySet | None = None

    @property
    def keys(self) -> KeySet:
        if self._keys is None:
            raise RuntimeError(f"{type(self).__name__}.load() reads the keys before anything asks for them")
        return self._keys

    @abstractmethod
    async def _check(self) -> None:
        """Look at the key source once; replace the key set if it changed."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever())

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._check()
            except Exception:  # a failed refresh keeps the last good keys; say so and try again
                log.exception("refreshing the JWKS failed; keeping the last good key set")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class FileKeySource(_Refreshing):
    """A JWKS file, re-read when its size, mtime or inode change (a rename onto it counts)."""

    def __init__(self, path: Path, algorithms: frozenset[str], interval_s: float = 1.0) -> None:
        self.path = path
        self.algorithms = algorithms
        self.interval_s = interval_s
        self._stamp: tuple[int, int, int] | None = None
        self._keys: KeySet | None = None

    @classmethod
    async def load(cls, path: Path, algorithms: frozenset[str], interval_s: float = 1.0) -> FileKeySource:
        """Read the file now; a missing or bad file is a start-up error."""
        source = cls(path, algorithms, interval_s)
        try:
            await source._check()
        except OSError as exc:
            raise AuthConfigError(f"cannot read the JWKS file {path}: {exc}") from exc
        return source

    def _stat(self) -> tuple[int, int, int]:
        stat = os.stat(self.path)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    async def _check(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        data = await asyncio.to_thread(self.path.read_bytes)
        try:
            keys = parse_jwks(data, self.algorithms)
        except AuthConfigError:
            if self._keys is None:
                raise
            self._stamp = stamp  # do not re-read the same bad file every second
            log.exception(
                "the JWKS file %s changed but cannot be used; keeping the last good key set", self.path
            )
            return
        self._stamp = stamp
        if self._keys is not None:
            log.info("JWKS file %s re-read: kids %s", self.path, sorted(keys.kids))
        self._keys = keys

    async def refresh_for(self, kid: str) -> None:
        # A stat is cheap: look at once, so a key added to the file is usable on its first token.
        try:
            await self._check()
        except (OSError, AuthConfigError):
            log.exception("re-reading the JWKS file %s failed; keeping the last good key set", self.path)

    def describe(self) -> str:
        return f"JWKS file {self.path}"


class UrlKeySource(_Refreshing):
    """An issuer's JWKS endpoint over https, fetched in a worker thread with a timeout."""

    def __init__(
        self,
        url: str,
        algorithms: frozenset[str],
        interval_s: float = 300.0,
        min_interval_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        if urlparse(url).scheme != "https":
            raise AuthConfigError(f"auth_jwks_url must be an https URL, got {url!r}")
        self.url = url
        self.algorithms = algorithms
        self.interval_s = interval_s
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self._keys: KeySet | None = None
        self._document: bytes | None = None
        self._last_attempt = -float("inf")
        self._inflight: asyncio.Task[None] | None = None

    @classmethod
    async def load(cls, url: str, algorithms: frozenset[str], **kwargs: float) -> UrlKeySource:
        """Fetch the keys now; an unreachable or bad endpoint is a start-up error."""
        source = cls(url, algorithms, **kwargs)
        try:
            await source._check()
        except OSError as exc:
            raise AuthConfigError(f"cannot fetch the JWKS from {url}: {exc}") from exc
        return source

    def _fetch(self) -> bytes:
        context = ssl.create_default_context()  # system trust store; SSL_CERT_FILE points elsewhere
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
            data: bytes = response.read(MAX_JWKS_BYTES + 1)
            return data

    async def _check(self) -> None:
        self._last_attempt = time.monotonic()
        data = await asyncio.to_thread(self._fetch)
        if data == self._document:
            return
        keys = parse_jwks(data, self.algorithms)
        if self._keys is not None:
            log.info("JWKS from %s changed: kids %s", self.url, sorted(keys.kids))
        self._keys, self._document = keys, data

    async def refresh_for(self, kid: str) -> None:
        """Fetch again for an unknown kid, at most once per `min_interval_s`; concurrent callers share it."""
        if self._inflight is None:
            if time.monotonic() - self._last_attempt < self.min_interval_s:
                return
            self._inflight = asyncio.create_task(self._check())
        task = self._inflight
        try:
            await asyncio.shield(task)
        except (OSError, AuthConfigError):
            log.exception("fetching the JWKS from %s failed; keeping the last good key set", self.url)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    def describe(self) -> str:
        return f"JWKS {self.url}"
