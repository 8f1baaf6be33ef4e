"""What each method requires: the scope table, deny by default, and the rules of user-bound tokens.

- Every `aisle.v1` method named in `METHOD_SCOPES` needs its scope (or `admin`); any other method under
  `aisle.v1` needs `admin`; only `OPEN_SERVICES` (health, reflection) need no token at all.
- A user-bound token (claim `aisle_user` = U) acts for customer U only, whatever its scopes: it may send
  U's events, read U's recommendations and profile, update U, and read the catalog; nothing else
  (no catalog writes, no erasure or export, no method added later until it is listed in `USER_BOUND`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.auth.errors import PermissionDenied
from server.auth.tokens import Principal

ADMIN = "admin"
PRIVACY = "privacy"

METHOD_SCOPES: dict[str, str] = {
    "/aisle.v1.EventService/Track": "events:write",
    "/aisle.v1.CatalogService/GetItem": "catalog:read",
    "/aisle.v1.CatalogService/UpsertItems": "catalog:write",
    "/aisle.v1.CatalogService/DeleteItems": "catalog:write",
    "/aisle.v1.UserService/GetProfile": "users:read",
    "/aisle.v1.UserService/UpsertUser": "users:write",
    "/aisle.v1.UserService/EraseUser": PRIVACY,
    "/aisle.v1.UserService/ExportUser": PRIVACY,
    "/aisle.v1.RecommendationService/Recommend": "recommendations:read",
    "/aisle.v1.RecommendationService/SimilarItems": "recommendations:read",
    # Every matching customer's recommendations at once: a scope of its own, never a user-bound token.
    "/aisle.v1.SegmentService/ExportRecommendations": "recommendations:export",
}

#: Services anyone may call without a token: load balancers probe health, tools list services.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def is_open(method: str) -> bool:
    """Whether `method` (`/package.Service/Method`) needs no token."""
    return method[1:].partition("/")[0] in OPEN_SERVICES


def required_scope(method: str) -> str:
    """The scope a call of `method` needs: its entry in the table, else `admin` (deny by default)."""
    return METHOD_SCOPES.get(method, ADMIN)


def authorize(principal: Principal, method: str) -> None:
    """Raise `PermissionDenied` unless the token's scopes allow `method`, and a user-bound token may call it."""
    scope = required_scope(method)
    if scope not in principal.scopes and ADMIN not in principal.scopes:
        raise PermissionDenied(f"the token lacks the scope {scope!r} that {method} requires")
    if principal.user is not None and method not in USER_BOUND:
        raise PermissionDenied(f"a user-bound token may not call {method}")


def _track_users(request: Any) -> list[str]:
    return [event.user_id for event in request.events]


def _user_id(request: Any) -> list[str]:
    return [request.user_id]


def _upserted_user(request: Any) -> list[str]:
    return [request.user.user_id]


def _none(request: Any) -> list[str]:
    return []


#: The methods a user-bound token may call, each with the customers a request of it acts for.
USER_BOUND: dict[str, Callable[[Any], list[str]]] = {
    "/aisle.v1.EventService/Track": _track_users,
    "/aisle.v1.RecommendationService/Recommend": _user_id,
    "/aisle.v1.UserService/GetProfile": _user_id,
    "/aisle.v1.UserService/UpsertUser": _upserted_user,
    "/aisle.v1.CatalogService/GetItem": _none,
    "/aisle.v1.RecommendationService/SimilarItems": _none,
}


def check_user_binding(principal: Principal, method: str, request: Any) -> None:
    """For a user-bound token: every customer the request acts for must be the token's (else the whole call
    is refused, nothing applied). A Recommend without a user is refused too: the token speaks for one user."""
    if principal.user is None:
        return
    users = USER_BOUND[method](request)
    if any(user != principal.user for user in users):
        raise PermissionDenied("a user-bound token may only act for its own user")
