"""Clients over the generated stubs, with per-call deadlines and retries.

Retries are gRPC's own (a service config `retryPolicy`): UNAVAILABLE is retried with exponential
backoff for every method; writes are safe to retry because events carry an idempotency key
(`event_id`) and upserts replace whole records. Deadlines are set per call from `ClientOptions`.
The two classes share everything but the channel type, so their methods are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypedDict

import grpc

from clients.auth import AsyncBearerInterceptor, BearerInterceptor, TokenSource
from protos.aisle.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    recommendations_pb2,
    recommendations_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client talks to Aisle."""

    target: str = "localhost:50051"
    #: Deadline of a read (Recommend, GetProfile, …) and of a write (Track, UpsertItems, …), seconds.
    read_timeout_s: float = 1.0
    write_timeout_s: float = 10.0
    max_attempts: int = 4
    #: Bearer token sent as `authorization` metadata, for servers that require JWTs.
    token: str | None = None
    #: Or a callable that returns a token (e.g. from the issuer's token endpoint): called again when the
    #: token is `token_refresh_margin_s` from its `exp`, or refused (UNAUTHENTICATED; the call is retried once).
    token_provider: Callable[[], str] | None = None
    token_refresh_margin_s: float = 30.0
    #: PEM root certificates for TLS; None means a plaintext channel.
    root_certificates: bytes | None = None
    #: PEM client certificate chain and key, for servers that require mutual TLS.
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def channel_options(self) -> list[tuple[str, Any]]:
        retry = {
            "methodConfig": [
                {
                    "name": [{"service": "aisle.v1." + s} for s in _SERVICES],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
        return [
            ("grpc.service_config", json.dumps(retry)),
            ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


_SERVICES = ("EventService", "CatalogService", "UserService", "RecommendationService")


def recommend_request(
    user_id: str,
    k: int = 10,
    context_item_id: str = "",
    exclude_item_ids: Sequence[str] = (),
    category_prefix: str = "",
    explain: bool = True,
    max_per_category: int = 0,
    session_id: str = "",
) -> recommendations_pb2.RecommendRequest:
    return recommendations_pb2.RecommendRequest(
        user_id=user_id,
        session_id=session_id,
        k=k,
        context_item_id=context_item_id,
        exclude_item_ids=exclude_item_ids,
        category_prefix=category_prefix,
        explain=explain,
        max_per_category=max_per_category,
    )


class _CallOptions(TypedDict):
    """The keyword arguments every call gets: its deadline and the bearer token, if any."""

    timeout: float
    metadata: tuple[tuple[str, str], ...]


class _Stubs:
    """What both clients share: the options and each call's deadline; the channel and stubs are their own."""

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._read = _CallOptions(timeout=options.read_timeout_s, metadata=options.metadata())
        self._write = _CallOptions(timeout=options.write_timeout_s, metadata=options.metadata())


def _token_source(options: ClientOptions) -> TokenSource | None:
    if options.token_provider is None:
        return None
    return TokenSource(options.token_provider, options.token_refresh_margin_s)


def _credentials(options: ClientOptions) -> grpc.ChannelCredentials | None:
    """TLS credentials when the options carry certificates; None for a plaintext channel."""
    if options.root_certificates is None and options.certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=options.root_certificates,
        private_key=options.private_key,
        certificate_chain=options.certificate_chain,
    )


def _sync_channel(options: ClientOptions) -> grpc.Channel:
    creds = _credentials(options)
    channel = (
        grpc.secure_channel(options.target, creds, options=options.channel_options())
        if creds is not None
        else grpc.insecure_channel(options.target, options=options.channel_options())
    )
    source = _token_source(options)
    return channel if source is None else grpc.intercept_channel(channel, BearerInterceptor(source))


def _aio_channel(options: ClientOptions) -> grpc.aio.Channel:
    source = _token_source(options)
    interceptors = [AsyncBearerInterceptor(source)] if source is not None else None
    creds = _credentials(options)
    if creds is not None:
        return grpc.aio.secure_channel(
            options.target, creds, options=options.channel_options(), interceptors=interceptors
        )
    return grpc.aio.insecure_channel(
        options.target, options=options.channel_options(), interceptors=interceptors
    )


class AisleClient(_Stubs):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(self, options: ClientOptions = ClientOptions()) -> None:
        super().__init__(options)
        self.channel = _sync_channel(options)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self.users = users_pb2_grpc.UserServiceStub(self.channel)
        self.recs = recommendations_pb2_grpc.RecommendationServiceStub(self.channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def track(self, events: Iterable[events_pb2.Event]) -> events_pb2.TrackResponse:
        return self.events.Track(events_pb2.TrackRequest(events=list(events)), **self._write)

    def upsert_items(self, items: Iterable[catalog_pb2.Item]) -> int:
        return self.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=list(items)), **self._write
        ).upserted

    def get_item(self, item_id: str) -> catalog_pb2.Item:
        return self.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=item_id), **self._read)

    def delete_items(self, item_ids: Iterable[str]) -> int:
        return self.catalog.DeleteItems(
            catalog_pb2.DeleteItemsRequest(item_ids=list(item_ids)), **self._write
        ).deleted

    def upsert_user(self, user: users_pb2.User) -> None:
        self.users.UpsertUser(users_pb2.UpsertUserRequest(user=user), **self._write)

    def profile(self, user_id: str) -> users_pb2.Profile:
        return self.users.GetProfile(users_pb2.GetProfileRequest(user_id=user_id), **self._read)

    def erase_user(self, user_id: str) -> users_pb2.EraseUserResponse:
        """Erase the customer everywhere; the answer is the receipt (safe to retry: a second one finds nothing)."""
        return self.users.EraseUser(users_pb2.EraseUserRequest(user_id=user_id), **self._write)

    def export_user(self, user_id: str) -> users_pb2.ExportUserResponse:
        """Everything held about the customer; `.json` is the document."""
        return self.users.ExportUser(users_pb2.ExportUserRequest(user_id=user_id), **self._write)

    def recommend(self, user_id: str, k: int = 10, **kwargs: Any) -> recommendations_pb2.RecommendResponse:
        """Keyword arguments: context_item_id, exclude_item_ids, category_prefix, explain, max_per_category,
        session_id."""
        return self.recs.Recommend(recommend_request(user_id, k, **kwargs), **self._read)

    def similar_items(
        self, item_id: str, k: int = 10, explain: bool = True
    ) -> recommendations_pb2.SimilarItemsResponse:
        request = recommendations_pb2.SimilarItemsRequest(item_id=item_id, k=k, explain=explain)
        return self.recs.SimilarItems(request, **self._read)


class AsyncAisleClient(_Stubs):
    """asyncio client with the same methods as `AisleClient`, awaited. `async with` or `await close()`."""

    def __init__(self, options: ClientOptions = ClientOptions()) -> None:
        super().__init__(options)
        self.channel = _aio_channel(options)
        self.events = events_pb2_grpc.EventServiceStub(self.channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channel)
        self.users = users_pb2_grpc.UserServiceStub(self.channel)
        self.recs = recommendations_pb2_grpc.RecommendationServiceStub(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def track(self, events: Iterable[events_pb2.Event]) -> events_pb2.TrackResponse:
        return await self.events.Track(events_pb2.TrackRequest(events=list(events)), **self._write)

    async def upsert_items(self, items: Iterable[catalog_pb2.Item]) -> int:
        response = await self.catalog.UpsertItems(
            catalog_pb2.UpsertItemsRequest(items=list(items)), **self._write
        )
        return response.upserted

    async def get_item(self, item_id: str) -> catalog_pb2.Item:
        return await self.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=item_id), **self._read)

    async def delete_items(self, item_ids: Iterable[str]) -> int:
        response = await self.catalog.DeleteItems(
            catalog_pb2.DeleteItemsRequest(item_ids=list(item_ids)), **self._write
        )
        return response.deleted

    async def upsert_user(self, user: users_pb2.User) -> None:
        await self.users.UpsertUser(users_pb2.UpsertUserRequest(user=user), **self._write)

    async def profile(self, user_id: str) -> users_pb2.Profile:
        return await self.users.GetProfile(users_pb2.GetProfileRequest(user_id=user_id), **self._read)

    async def erase_user(self, user_id: str) -> users_pb2.EraseUserResponse:
        return await self.users.EraseUser(users_pb2.EraseUserRequest(user_id=user_id), **self._write)

    async def export_user(self, user_id: str) -> users_pb2.ExportUserResponse:
        return await self.users.ExportUser(users_pb2.ExportUserRequest(user_id=user_id), **self._write)

    async def recommend(
        self, user_id: str, k: int = 10, **kwargs: Any
    ) -> recommendations_pb2.RecommendResponse:
        return await self.recs.Recommend(recommend_request(user_id, k, **kwargs), **self._read)

    async def similar_items(
        self, item_id: str, k: int = 10, explain: bool = True
    ) -> recommendations_pb2.SimilarItemsResponse:
        request = recommendations_pb2.SimilarItemsRequest(item_id=item_id, k=k, explain=explain)
        return await self.recs.SimilarItems(request, **self._read)
