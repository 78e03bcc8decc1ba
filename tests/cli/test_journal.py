"""``glue journal migrate|export|import|prune`` as an operator runs them: the real command line (a
subprocess for the export | import pipe, ``glue.cli.main`` in a thread for the rest, to keep the suite
fast), a SQLite file and a PostgreSQL database with the DSN from the environment, as in a deployment."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from glue import cli, journal, settings
from glue.journal import postgres
from tests.journal.conftest import delivery
from tests.support import cloudevent


def glue(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "glue.cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


async def glue_here(
    capsys: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, *args: str, dsn: str = ""
) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("TEST_JOURNAL_DSN", dsn)
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out.decode(), err.decode()


def write_configs(tmp_path: Path) -> tuple[Path, Path]:
    lite = tmp_path / "sqlite.yaml"
    lite.write_text(f"journal:\n  backend: sqlite\n  path: {tmp_path / 'journal.db'}\n")
    pg = tmp_path / "postgres.yaml"
    pg.write_text("journal:\n  backend: postgres\n  dsn: {env: TEST_JOURNAL_DSN}\n  retentionDays: 1\n")
    return lite, pg


async def test_migrate_reports_what_it_applied_once(
    tmp_path: Path, pg_dsn: str, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pg = write_configs(tmp_path)

    first = await glue_here(capsysbinary, monkeypatch, "journal", "migrate", "-c", str(pg), dsn=pg_dsn)
    second = await glue_here(capsysbinary, monkeypatch, "journal", "migrate", "-c", str(pg), dsn=pg_dsn)

    versions = [version for version, _, _ in postgres.MIGRATIONS]
    latest, applied = versions[-1], ", ".join(map(str, versions))
    assert first == (0, f"journal (postgres): schema version {latest}, applied {applied}\n", "")
    assert second == (0, f"journal (postgres): schema version {latest}, up to date\n", "")
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM glue_schema_migrations") == len(versions)
    finally:
        await conn.close()


async def test_export_sqlite_import_postgres_through_a_pipe(
    tmp_path: Path, pg_dsn: str, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    lite_config, pg_config = write_configs(tmp_path)
    store = journal.create(settings.Journal(backend="sqlite", path=tmp_path / "journal.db"))
    await store.open()
    await store.append(delivery(b"raw"), [cloudevent("one"), cloudevent("two")])
    await store.reject(delivery(b"\x00"), "not JSON")
    await store.close()

    exported = await asyncio.to_thread(glue, "journal", "export", "-c", str(lite_config))
    assert exported.returncode == 0, exported.stderr
    imported = await asyncio.to_thread(
        glue,
        "journal",
        "import",
        "-c",
        str(pg_config),
        "-",
        env={"TEST_JOURNAL_DSN": pg_dsn},
        stdin=exported.stdout,
    )

    assert imported.returncode == 0, imported.stderr
    assert (
        imported.stdout.decode()
        == "2 deliveries, 2 events, 0 invocations, 0 attempts, 0 audit entries, 0 routes' rails imported\n"
    )
    code, out, _ = await glue_here(
        capsysbinary, monkeypatch, "events", "list", "-c", str(pg_config), dsn=pg_dsn
    )
    assert code == 0
    assert [line.count('"id":"one"') + line.count('"id":"two"') for line in out.splitlines()] == [1, 1]
    dump = tmp_path / "export.jsonl"
    dump.write_bytes(exported.stdout)

    again = await glue_here(
        capsysbinary, monkeypatch, "journal", "import", "-c", str(pg_config), str(dump), dsn=pg_dsn
    )
    assert again[0] == 1
    assert "not empty" in again[2] and "Traceback" not in again[2]


async def test_import_of_a_broken_file_says_which_line(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    lite_config, _ = write_configs(tmp_path)
    bad = tmp_path / "export.jsonl"
    bad.write_text('{"kind": "glue-journal", "version": 1}\n{"kind": "event", "row": {"seq": 1}}\n')
    code, _, err = await glue_here(
        capsysbinary, monkeypatch, "journal", "import", "-c", str(lite_config), str(bad)
    )
    assert code == 1
    assert err.startswith(f"glue: {bad}: line 2: event lacks identity")


async def test_a_wrong_dsn_is_a_clear_error_without_the_password(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pg_config = write_configs(tmp_path)
    code, _, err = await glue_here(
        capsysbinary,
        monkeypatch,
        "journal",
        "migrate",
        "-c",
        str(pg_config),
        dsn="postgresql://glue:hunter2-secret@127.0.0.1:1/glue",
    )
    assert code == 2
    assert err.startswith("glue: journal: cannot connect to the postgres journal")
    assert "hunter2-secret" not in err and "Traceback" not in err


async def test_prune_now(
    tmp_path: Path, pg_dsn: str, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pg_config = write_configs(tmp_path)
    store = journal.create(
        settings.Journal(backend="postgres", dsn=settings.SecretRef(value=SecretStr(pg_dsn)))
    )
    await store.open()
    await store.append(delivery(), [cloudevent("old"), cloudevent("new")])
    claimed = await store.claim_events("r", limit=10, lease=30, now=time.time())
    await store.record_routing(
        "r", {e.seq: [] for e in claimed if e.id == "old"}, now=time.time() - 2 * 86400
    )
    await store.close()

    result = await asyncio.to_thread(
        glue, "journal", "prune", "-c", str(pg_config), env={"TEST_JOURNAL_DSN": pg_dsn}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "0 invocations, 1 events, 0 deliveries pruned\n"
