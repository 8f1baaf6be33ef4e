"""Signing keys, JWKS files and tokens for the auth tests: good ones (`clients.tokens.mint`) and forged ones.

Forged tokens are built by hand where pyjwt would refuse to build them (alg none, HMAC keyed with a public key,
a tampered payload), so the server sees exactly the bytes an attacker would send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from clients.tokens import DEV_AUDIENCE, DEV_ISSUER, PrivateKey, generate_key, jwks, mint, public_jwk
from loadtest.harness.server import ServerProcess

ISSUER = DEV_ISSUER
AUDIENCE = DEV_AUDIENCE


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kid_of(key: PrivateKey) -> str:
    return str(public_jwk(key)["kid"])


def write_jwks(path: Path, keys: list[PrivateKey]) -> None:
    """Write the JWKS atomically (a rename), as a deployment would, so the server never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(jwks(keys)))
    tmp.replace(path)


def auth_env(jwks_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AISLE_AUTH_JWKS_FILE": str(jwks_path),
        "AISLE_AUTH_ISSUER": ISSUER,
        "AISLE_AUTH_AUDIENCE": AUDIENCE,
        "AISLE_AUTH_JWKS_REFRESH_S": "0.2",
        **extra,
    }


def jwt_server(directory: Path, *keys: PrivateKey, **extra: str) -> ServerProcess:
    """A started server in ``directory`` that requires tokens signed by one of ``keys`` (its JWKS written
    beside it, at ``directory / "jwks.json"``), with `auth_env`'s settings and ``extra``."""
    write_jwks(directory / "jwks.json", list(keys))
    return ServerProcess(directory / "server", env=auth_env(directory / "jwks.json", **extra)).start()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """`header.payload.` with an empty signature: what `alg: none` looks like."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def hs256_with_public_key(key: PrivateKey, claims: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC-SHA256 keyed with the PEM of the server's *public* RSA key."""
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid_of(key)}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def tampered(token: str, **changes: Any) -> str:
    """`token` with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims.update(changes)
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(unb64(token.split(".")[1]))
    return claims


__all__ = ["generate_key", "mint"]
