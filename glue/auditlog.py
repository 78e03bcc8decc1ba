"""The audit trail beyond the journal: the daemon's start (with the hash of its config) recorded in it,
and every entry copied to the bucket archive (``archive.audit``) as it is written, by whichever
replica takes it first (the journal marks each entry as taken, so none is copied twice)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

import glue
from glue import journal
from glue import settings as settings_mod

if TYPE_CHECKING:  # the MinIO SDK is imported only when an archive is configured
    from glue import objectstore

__all__ = ["AuditArchive", "config_hash", "record_start"]

log = structlog.get_logger(__name__)


def config_hash(settings: settings_mod.Settings) -> str:
    """The SHA-256 of the settings as loaded (secrets appear masked, so it never reveals one; a secret's
    source, file or variable, is part of it)."""
    text = settings.model_dump_json(by_alias=True, exclude_none=True)
    return hashlib.sha256(text.encode()).hexdigest()


async def record_start(store: journal.Journal, settings: settings_mod.Settings, who: str) -> str:
    """Record in the audit trail that ``who`` (this replica) started with this config; its hash."""
    digest = config_hash(settings)
    await store.record_audit(
        who,
        "start",
        detail={"configHash": digest, "version": glue.__version__, "routes": len(settings.routes)},
        now=time.time(),
    )
    log.info("config", hash=digest)
    return digest


class AuditArchive:
    """Copies new audit entries (from this daemon or any ``glue`` command) to the bucket archive."""

    name = "audit-archive"

    def __init__(
        self,
        store: journal.Journal,
        archive: objectstore.ArchiveWriter,
        *,
        poll_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.archive = archive
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="audit-archive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(journal.JournalUnavailable):
            await self.copy()  # what came in last goes with the archive's final flush

    async def copy(self) -> int:
        """Hand the entries not yet copied to the archive writer; returns how many."""
        entries = await self.store.take_unarchived_audit()
        for entry in entries:
            self.archive.audit(entry.summary(), entry.at)
        return len(entries)

    async def _loop(self) -> None:
        while True:
            try:
                await self.copy()
            except journal.JournalUnavailable as exc:
                log.warning("audit archive paused: journal unavailable", error=str(exc))
            await asyncio.sleep(self.poll_seconds)
