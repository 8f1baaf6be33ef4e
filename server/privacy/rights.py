"""Erasure and export of one customer: the one routine that calls every store's `delete_user`, and the one
that gathers everything held about a customer. Both write the audit log, whether they succeed or not.

Erasure, in this order (each step is in the receipt):
1. `keys`: the customer's data key is destroyed (crypto-shredding). From here on nothing sealed with it can be
   read: the journal's records, the events on the Kafka topic (any replay, any consumer group), the sealed
   features in Redis and any backup of them. Done first, so that an erasure interrupted later still leaves
   nothing readable.
2. `journal` (embedded: an erasure record, which replay honours) or `users_topic` (Kafka: a tombstone, which
   every process applies within milliseconds and compaction makes final).
3. `users`: the customer record (attributes, consent) in this process.
4. `features`: the feature store (process memory, or Redis), and this process's caches.
5. `lake`: the batch store's rows are queued for deletion at the next lake maintenance (`make lake-optimize`).
When the call returns, nothing the servers read holds the customer. A customer who sends events again after
that is a new customer, with a new key.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, TypedDict

from google.protobuf import json_format
from google.protobuf.message import Message

from feature_worker.errors import AisleError, InvalidArgument
from feature_worker.lake.erasures import ErasureQueue
from feature_worker.privacy.vault import Vault
from feature_worker.validation import check_id
from protos.aisle.v1 import users_pb2
from server.privacy.audit import AuditLog

if TYPE_CHECKING:
    from server.engine import Engine

#: Version of the export document's layout.
EXPORT_FORMAT = "aisle.export/1"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class CustomerRights:
    """Erase and export customers of `engine`; `vault` None when encryption is off."""

    def __init__(self, engine: Engine, vault: Vault | None, audit: AuditLog, lake_dir: str = "") -> None:
        self.engine = engine
        self.vault = vault
        self.audit = audit
        self.lake_dir = lake_dir
        self._erasures: ErasureQueue | None = None

    async def erase(self, user_id: str, who: str, peer: str) -> users_pb2.EraseUserResponse:
        """Erase the customer from every store; the receipt says what was removed where."""
        started = time.perf_counter()
        receipt_id = uuid.uuid4().hex
        try:
            _check(user_id)
            response = await self._erase(user_id, receipt_id)
        except AisleError as error:
            self.audit.record(
                who=who,
                peer=peer,
                method="EraseUser",
                subject=user_id,
                outcome=error.status,
                receipt_id=receipt_id,
                seconds=time.perf_counter() - started,
            )
            raise
        self.audit.record(
            who=who,
            peer=peer,
            method="EraseUser",
            subject=user_id,
            outcome="OK",
            receipt_id=receipt_id,
            seconds=time.perf_counter() - started,
        )
        return response

    async def _erase(self, user_id: str, receipt_id: str) -> users_pb2.EraseUserResponse:
        engine = self.engine
        steps: list[users_pb2.ErasureStep] = []
        held = False

        def step(store: str, done: bool, action: str, detail: str) -> None:
            nonlocal held
            held = held or done
            steps.append(
                users_pb2.ErasureStep(store=store, action=action if done else "nothing_held", detail=detail)
            )

        if self.vault is not None:
            step(
                "keys",
                await self.vault.delete_user(user_id),
                "destroyed",
                "data key destroyed: what was sealed with it (journal, event topic, features, backups) is unreadable",
            )
        had_record = engine.users.get(user_id) is not None
        store, action, detail = engine.ingest.erasure_step
        steps.append(
            users_pb2.ErasureStep(
                store=store,
                action=action if await engine.ingest.delete_user(user_id) else "nothing_held",
                detail=detail,
            )
        )
        step(
            "users", engine.users.delete_user(user_id) or had_record, "deleted", "customer record and consent"
        )
        step(
            "features",
            await engine.store.delete_user(user_id),
            "deleted",
            "real-time features and applied ids",
        )
        if engine.models is not None:
            step(
                "proposals",
                engine.models.forget(user_id),
                "deleted",
                "learned candidates this server process remembered for the customer's latest state",
            )
        if self.lake_dir:
            await asyncio.to_thread(self._schedule, user_id, receipt_id)
            steps.append(
                users_pb2.ErasureStep(
                    store="lake",
                    action="scheduled",
                    detail="rows deleted at the next lake maintenance (lake-optimize)",
                )
            )
        else:
            steps.append(
                users_pb2.ErasureStep(store="lake", action="not_configured", detail="no batch store")
            )
        return users_pb2.EraseUserResponse(
            user_id=user_id, receipt_id=receipt_id, erased_at_ms=_now_ms(), steps=steps, held=held
        )

    def close(self) -> None:
        self.audit.close()

    def _schedule(self, user_id: str, receipt_id: str) -> None:
        if self._erasures is None:
            self._erasures = ErasureQueue(self.lake_dir)
        self._erasures.schedule(user_id, receipt_id, _now_ms())

    async def export(self, user_id: str, who: str, peer: str) -> users_pb2.ExportUserResponse:
        """Everything held about the customer, as one JSON document."""
        started = time.perf_counter()
        try:
            _check(user_id)
            document = await self._export(user_id)
        except AisleError as error:
            self.audit.record(
                who=who,
                peer=peer,
                method="ExportUser",
                subject=user_id,
                outcome=error.status,
                seconds=time.perf_counter() - started,
            )
            raise
        self.audit.record(
            who=who,
            peer=peer,
            method="ExportUser",
            subject=user_id,
            outcome="OK",
            seconds=time.perf_counter() - started,
        )
        return users_pb2.ExportUserResponse(
            user_id=user_id,
            json=json.dumps(document, ensure_ascii=False),
            exported_at_ms=document["exported_at_ms"],
        )

    async def _export(self, user_id: str) -> _Export:
        engine = self.engine
        profile = await engine.profile(user_id)
        record = engine.users.get(user_id)
        events = await engine.ingest.held_events(user_id)

        def as_dict(message: Message) -> dict[str, Any]:
            return json_format.MessageToDict(
                message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )

        return {
            "format": EXPORT_FORMAT,
            "user_id": user_id,
            "exported_at_ms": _now_ms(),
            "user": as_dict(record) if record is not None else None,
            "profile": as_dict(profile),
            "events": [as_dict(event) for event in events],
            "events_held_in": engine.ingest.events_held_in,
        }


class _Export(TypedDict):
    """The export document (`ExportUserResponse.json`); the messages as proto3 JSON with field names as declared."""

    format: str
    user_id: str
    exported_at_ms: int
    user: dict[str, Any] | None
    profile: dict[str, Any]
    events: list[dict[str, Any]]
    events_held_in: str


def _check(user_id: str) -> None:
    violations: list[tuple[str, str]] = []
    check_id(user_id, "user_id", violations)
    if violations:
        raise InvalidArgument(violations)
