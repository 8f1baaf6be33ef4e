"""A small HTTP/JSON client over the standard library, for the gateway's tests (real sockets, no mocks)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers (lower-case names) and the decoded JSON body (None when empty)."""

    status: int
    headers: dict[str, str]
    body: Any

    def violations(self) -> list[tuple[str, str]]:
        """The google.rpc.BadRequest field violations of an error body, as (field, description)."""
        found: list[tuple[str, str]] = []
        for detail in self.body.get("details", []):
            if detail.get("@type") == "type.googleapis.com/google.rpc.BadRequest":
                found += [(v["field"], v["description"]) for v in detail.get("fieldViolations", [])]
        return found


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    """`method path` on 127.0.0.1:`port` with an optional JSON body (or `raw` bytes) and bearer token."""
    sent = dict(headers or {})
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if payload is not None:
        sent.setdefault("Content-Type", "application/json")
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        data = response.read()
        names = {k.lower(): v for k, v in response.getheaders()}
        decoded = (
            json.loads(data)
            if data and names.get("content-type", "").startswith("application/json")
            else None
        )
        return Answer(response.status, names, decoded if decoded is not None else (data.decode() or None))
    finally:
        connection.close()
