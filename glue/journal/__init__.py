"""The durable inbox. Everything after intake reads from here.

:class:`Journal` is the protocol both backends implement: SQLite (embedded default, one file, WAL,
group commit) and PostgreSQL (several replicas, leased claims). Callers depend on this module only and
get a backend from :func:`open_journal`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from glue import events

if TYPE_CHECKING:
    from glue import settings as settings_mod

__all__ = ["Appended", "Journal", "JournalUnavailable", "Rejected", "StoredEvent", "create"]


class JournalUnavailable(Exception):
    """The journal cannot take writes now (disk full, locked, database down): answer 503."""


@dataclasses.dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of appending one event: its identity and whether it was new."""

    identity: str
    id: str
    new: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    identity: str
    id: str
    source: str
    type: str
    subject: str | None
    received_at: float
    status: str  # pending -> routed (execution owns the states after that)
    delivery_id: int
    cloudevent: bytes  # structured-mode JSON

    def event(self) -> events.CloudEvent:
        return events.from_json(self.cloudevent)

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "receivedAt": self.received_at,
            "status": self.status,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """A delivery that could not be decoded (a Kafka poison record): kept, visible, never retried."""

    delivery_id: int
    reason: str
    delivery: events.Delivery


class Journal(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, delivery: events.Delivery, batch: Sequence[events.CloudEvent]) -> list[Appended]:
        """Durably store the delivery and its events, deduplicated on identity, in one transaction.

        Returns once committed. Raises JournalUnavailable when the write cannot be made."""
        ...

    async def reject(self, delivery: events.Delivery, reason: str) -> int:
        """Durably store an undecodable delivery with its reason; returns its delivery id."""
        ...

    async def ping(self) -> None:
        """Raise JournalUnavailable unless a write would succeed now."""
        ...

    async def backlog(self) -> int:
        """Events journaled but not yet routed."""
        ...

    async def get(self, key: int | str) -> StoredEvent | None:
        """An event by sequence number, identity or CloudEvent id."""
        ...

    async def list(
        self, *, limit: int = 100, after: int = 0, status: str | None = None, type: str | None = None
    ) -> list[StoredEvent]: ...

    async def delivery(self, delivery_id: int) -> events.Delivery | None: ...

    async def rejected(self, *, limit: int = 100) -> list[Rejected]: ...


def create(config: settings_mod.Journal) -> Journal:
    """The backend the settings name (not yet opened)."""
    if config.backend == "postgres":
        from glue.journal import postgres

        return postgres.PostgresJournal(config)
    from glue.journal import sqlite

    return sqlite.SQLiteJournal(config)
