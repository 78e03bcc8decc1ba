"""Fixtures of the MinIO listen source: a journal (SQLite in tmp_path) and an intake over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from glue import intake, journal, pipeline
from glue import settings as settings_mod


@pytest.fixture
async def journal_(tmp_path: Path) -> AsyncIterator[journal.Journal]:
    store = journal.create(settings_mod.Journal(path=tmp_path / "journal.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def intake_(journal_: journal.Journal) -> AsyncIterator[intake.Intake]:
    accepting = pipeline.make_intake(journal_, max_backlog=10_000)
    await accepting.start()
    try:
        yield accepting
    finally:
        await accepting.stop()
