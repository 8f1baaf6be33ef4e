"""Development tokens: a local signing key, its JWKS, and access tokens minted with it.

    python -m clients keys [--dir .keys] [--alg RS256]        # what `make keys` runs
    python -m clients token --scope "recommendations:read events:write" [--user U] [--ttl 3600]

A production deployment gets its tokens from a real issuer (Keycloak, Auth0, Entra ID: see the README); these
are for development, tests and the demo. Tokens follow RFC 9068 (`typ: at+jwt`, `iss`, `aud`, `sub`,
`client_id`, `scope`, `iat`, `exp`, `jti`); `kid` is the key's RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: Issuer and audience of development tokens; the server must be told the same (see `dev_settings`).
DEV_ISSUER = "https://aisle.dev/issuer"
DEV_AUDIENCE = "aisle"
DEV_KEYS_DIR = Path(".keys")
ALGORITHMS = ("RS256", "ES256", "EdDSA")


def generate_key(alg: str = "RS256") -> PrivateKey:
    """A fresh private key for `alg` (RSA 2048, P-256 or Ed25519)."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"alg must be one of {ALGORITHMS}, got {alg!r}")


def algorithm_of(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    """The public half as a JWK with `kid` (its RFC 7638 thumbprint), `alg` and `use: sig`."""
    public = key.public_key()
    jwk: dict[str, Any]
    required: tuple[str, ...]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        required = ("e", "kty", "n")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        required = ("crv", "kty", "x", "y")
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        required = ("crv", "kty", "x")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    jwk.update(kid=_b64(hashlib.sha256(canonical.encode()).digest()), alg=algorithm_of(key), use="sig")
    return jwk


def jwks(keys: Iterable[PrivateKey]) -> dict[str, Any]:
    """A JWKS document publishing the public halves of `keys`."""
    return {"keys": [public_jwk(key) for key in keys]}


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise TypeError(f"{path} holds a {type(key).__name__}; RSA, P-256 or Ed25519 keys sign Aisle tokens")
    return key


def write_dev_keys(directory: Path = DEV_KEYS_DIR, alg: str = "RS256") -> tuple[Path, Path]:
    """Write `private.pem` (mode 0600) and `jwks.json` under `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_key(alg)
    pem, public = directory / "private.pem", directory / "jwks.json"
    pem.touch(mode=0o600)
    pem.write_bytes(private_pem(key))
    public.write_text(json.dumps(jwks([key]), indent=2) + "\n")
    return pem, public


def mint(
    key: PrivateKey,
    scopes: Iterable[str],
    *,
    subject: str = "dev-partner",
    user: str | None = None,
    issuer: str = DEV_ISSUER,
    audience: str | list[str] = DEV_AUDIENCE,
    ttl_s: float = 3600.0,
    kid: str | None = None,
    claims: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """An RFC 9068 access token signed by `key`. `user` makes it user-bound (claim `aisle_user`)."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "client_id": subject,
        "scope": " ".join(scopes),
        "iat": issued,
        "exp": issued + int(ttl_s),
        "jti": uuid.uuid4().hex,
    }
    if user is not None:
        payload["aisle_user"] = user
    payload.update(claims or {})
    headers = {"kid": kid or public_jwk(key)["kid"], "typ": "at+jwt"}
    return jwt.encode(payload, key, algorithm=algorithm_of(key), headers=headers)


def dev_settings(jwks_path: Path) -> dict[str, str]:
    """The AISLE_AUTH_* variables a server needs to accept tokens minted with the dev keys."""
    return {
        "AISLE_AUTH_JWKS_FILE": str(jwks_path),
        "AISLE_AUTH_ISSUER": DEV_ISSUER,
        "AISLE_AUTH_AUDIENCE": DEV_AUDIENCE,
    }
