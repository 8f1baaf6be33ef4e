"""Reading the journal's records back as events and customer records, opening the sealed ones.

Shared by the replay on start (`EmbeddedIngest.recover`), the batch store's writer (`JournalLake`) and the
export of a customer (`EmbeddedIngest.held_events`). A sealed record whose customer has no key any more (an
erasure destroyed it), or a newer key than the one it was sealed with (erased, then back), cannot be opened:
it is skipped and counted, which is what makes an erased customer stay erased across restarts.
"""

from __future__ import annotations

from feature_worker.privacy.keystores.file import KeyFile
from feature_worker.privacy.sealing import EVENT, USER, Unreadable, open_sealed
from feature_worker.privacy.vault import Vault
from protos.aisle.v1 import events_pb2, sealed_pb2, users_pb2
from server.embedded.journal import RecordKind


class JournalReader:
    """Decodes journal payloads; `vault` and `keys` open sealed ones (None: encryption off)."""

    def __init__(self, vault: Vault | None, keys: KeyFile | None) -> None:
        self.vault = vault
        self.keys = keys
        #: Sealed payloads skipped because their key is gone (erased customers).
        self.shredded = 0

    def _open(self, record: sealed_pb2.SealedRecord, field: bytes) -> bytes | None:
        if self.vault is None or self.keys is None:
            self.shredded += 1  # sealed, but encryption is off now: nothing can open it
            return None
        wrapped = self.keys.get(record.user_id)
        if wrapped is None:
            self.shredded += 1
            return None
        try:
            return open_sealed(
                self.vault.cipher(record.user_id, wrapped), record.user_id, field, record.value
            )
        except Unreadable:
            self.shredded += 1
            return None

    def events(self, kind: RecordKind, payload: bytes) -> list[events_pb2.Event]:
        """The readable events of an EVENTS or SEALED_EVENTS record, in their order."""
        if kind is RecordKind.EVENTS:
            return list(events_pb2.TrackRequest.FromString(payload).events)
        events = []
        for record in sealed_pb2.SealedBatch.FromString(payload).records:
            opened = self._open(record, EVENT)
            if opened is not None:
                events.append(events_pb2.Event.FromString(opened))
        return events

    def user(self, kind: RecordKind, payload: bytes) -> users_pb2.User | None:
        """The customer record of an UPSERT_USER or SEALED_USER record; None when it cannot be opened."""
        if kind is RecordKind.UPSERT_USER:
            return users_pb2.User.FromString(payload)
        opened = self._open(sealed_pb2.SealedRecord.FromString(payload), USER)
        return None if opened is None else users_pb2.User.FromString(opened)
