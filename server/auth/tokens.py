"""Bearer JWT verification: from an `authorization` header value to a `Principal`, or `Unauthenticated`.

Checked, in this order, before anything is parsed that need not be: at most `MAX_TOKEN_BYTES`, scheme
`Bearer`, a JOSE header whose `alg` is on the allow-list and whose `typ` is accepted (RFC 9068 `at+jwt`),
a `kid` naming a key of the current set whose algorithm is that `alg`, the signature, then the claims: `exp`
required, `nbf` and `iat` honoured with a leeway, `iss` exactly ours, `aud` containing ours.

Verified tokens are remembered until their `exp`, keyed by the token text, so a partner that reuses its
access token (as OAuth2 clients do) pays one dict lookup per call, not a signature check. The memory is
dropped whenever the key set changes, so a key removed from the JWKS stops being honoured at its next refresh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from feature_worker.validation import check_id
from server.auth.errors import Unauthenticated
from server.auth.keys import KeySet, KeySource

log = logging.getLogger(__name__)

#: Larger `authorization` values are refused before they are parsed (RFC 9068 tokens are well under 2 KiB).
MAX_TOKEN_BYTES = 4096
_REQUIRED_CLAIMS = ["exp", "iss", "aud"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as a verified token says.

    `partner` is the OAuth2 client (`client_id`, else `sub`): the unit of rate limiting. `user` is set for a
    user-bound token (claim `aisle_user`): it may act for that customer only.
    """

    partner: str
    scopes: frozenset[str]
    user: str | None
    expires_at: float


def _normalize_typ(value: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted from a media type, and media types are case-insensitive.
    value = value.lower()
    return value.removeprefix("application/")


class TokenVerifier:
    """Verifies bearer tokens against a key source, with a bounded cache of verified ones."""

    def __init__(
        self,
        source: KeySource,
        issuer: str,
        audience: str,
        algorithms: frozenset[str],
        token_types: Sequence[str] = ("at+jwt",),
        leeway_s: float = 30.0,
        cache_size: int = 10_000,
    ) -> None:
        self.source = source
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.token_types = frozenset(_normalize_typ(t) for t in token_types)
        self.leeway_s = leeway_s
        self.cache_size = cache_size
        self._cache: dict[str, Principal] = {}
        self._cache_keys: KeySet | None = None

    async def verify(self, authorization: str) -> Principal:
        """The principal of an `authorization` metadata value; raises `Unauthenticated`."""
        if len(authorization) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"the authorization value is over {MAX_TOKEN_BYTES} bytes")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token.strip():
            raise Unauthenticated("the authorization value must be `Bearer <JWT>`")
        token = token.strip()
        keys = self.source.keys
        if keys is not self._cache_keys:  # the key set changed: what was verified with it may no longer hold
            self._cache.clear()
            self._cache_keys = keys
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                return cached
            del self._cache[token]
        principal = await self._verify(token)
        self._remember(token, principal)
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthenticated("the bearer token's algorithm is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalize_typ(typ) not in self.token_types:
            raise Unauthenticated("the bearer token's type (typ) is not an accepted access token type")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the bearer token names no key (kid)")
        key = self.source.keys.get(kid)
        if key is None:
            await self.source.refresh_for(kid)
            key = self.source.keys.get(kid)
            if key is None:
                raise Unauthenticated("the bearer token's key (kid) is unknown")
        if key.alg != alg:
            raise Unauthenticated("the bearer token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": _REQUIRED_CLAIMS, "verify_sub": False, "verify_jti": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("the bearer token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("the bearer token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated("the bearer token is not for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated("the bearer token is not from the trusted issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the bearer token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the bearer token's signature does not verify") from exc
        except PyJWTError as exc:
            raise Unauthenticated("the bearer token is invalid") from exc
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        partner = claims.get("client_id") or claims.get("sub")
        if not isinstance(partner, str) or not partner:
            raise Unauthenticated("the bearer token names no client (client_id or sub)")
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise Unauthenticated("the bearer token's exp is not a number")
        user = claims.get("aisle_user")
        if user is not None:
            problems: list[tuple[str, str]] = []
            if isinstance(user, str):
                check_id(user, "aisle_user", problems)
            if not isinstance(user, str) or problems:
                raise Unauthenticated("the bearer token's aisle_user claim is not a valid user id")
        return Principal(partner=partner, scopes=_scopes(claims), user=user, expires_at=float(exp))

    def _remember(self, token: str, principal: Principal) -> None:
        if self.cache_size <= 0:
            return
        if len(self._cache) >= self.cache_size:
            now = time.time()
            for stale in [t for t, p in self._cache.items() if p.expires_at <= now]:
                del self._cache[stale]
            if len(self._cache) >= self.cache_size:  # all live: forget the oldest half (insertion order)
                for oldest in list(self._cache)[: self.cache_size // 2 + 1]:
                    del self._cache[oldest]
        self._cache[token] = principal


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """`scope` (RFC 9068: space-separated), or `scp` (Entra ID; a string or a list)."""
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str))
    return frozenset()
