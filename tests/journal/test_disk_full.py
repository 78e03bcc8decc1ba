"""A full disk under the SQLite journal: a small tmpfs mounted by the test and filled to ENOSPC while a
daemon takes deliveries over HTTP and runs a handler.

What a sender sees: 202 or 503 with ``Retry-After``, never a 500 nor a hang. What an operator sees:
``/readyz`` 503 naming the cause while the journal cannot write, and the executor's log naming the
cause ("database or disk is full"). Afterwards: every acknowledged event is journaled and handled once,
``PRAGMA integrity_check`` is ok, and intake takes deliveries again by itself once space is freed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from glue import app
from tests import support

pytestmark = pytest.mark.slow

counting = support.Counting()
registry, handled = counting.registry, counting.handled


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs of the test's own (the test runs as root; skipped where mounting is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until the filesystem refuses (ENOSPC); returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                if len(block) == 1:
                    return filler
                block = block[: len(block) // 2]
    finally:
        os.close(fd)


def ce_headers(event_id: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "/disk",
        "ce-type": "com.example.disk",
        "content-type": "application/json",
    }


class Sender:
    """Posts numbered events and keeps what each answer was; fails on a 500 or a slow answer."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.acknowledged: list[str] = []
        self.refused = 0
        self.n = 0

    async def send(self) -> int:
        self.n += 1
        event_id = f"e{self.n}"
        started = time.monotonic()
        async with self.session.post(
            f"{self.base}/events",
            data=orjson.dumps({"n": self.n, "pad": "x" * 2000}),
            headers=ce_headers(event_id),
        ) as response:
            body = await response.text()
            status = response.status
            retry_after = response.headers.get("Retry-After")
        assert time.monotonic() - started < 3, "an answer took longer than a sender's timeout"
        assert status in (202, 503), (status, body)
        if status == 202:
            self.acknowledged.append(event_id)
        else:
            assert retry_after is not None and int(retry_after) > 0
            self.refused += 1
        return status


async def test_a_full_disk_refuses_with_503_and_recovers_by_itself(small_disk: Path) -> None:
    handled.clear()
    loaded = support.daemon_settings(
        small_disk,
        endpoints=[{"name": "ce", "path": "/events", "format": "cloudevents"}],
        routes=[{"name": "count", "handler": "test.count"}],
        execution={"pollSeconds": 0.05},
    )
    daemon = app.Daemon(loaded, registry=registry)
    with capture_logs() as logs:
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                base = support.base_url(daemon)
                sender = Sender(session, base)
                for _ in range(20):
                    assert await sender.send() == 202
                await support.eventually(lambda: len(handled) == 20)

                filler = fill(small_disk)
                # The WAL may still have room for a few deliveries: send until the journal refuses.
                refused_in_a_row = 0
                for _ in range(2000):
                    refused_in_a_row = refused_in_a_row + 1 if await sender.send() == 503 else 0
                    if refused_in_a_row == 5:
                        break
                assert refused_in_a_row == 5, "intake never refused on a full disk"

                async with session.get(f"{base}/readyz") as response:
                    ready = (response.status, await response.text())
                assert ready[0] == 503 and "full" in ready[1], ready

                filler.unlink()
                # Intake resumes by itself: a sender's retry is taken again.
                await support.eventually(lambda: _taken(sender), within=10)
                async with session.get(f"{base}/readyz") as response:
                    assert response.status == 200, await response.text()
                for _ in range(10):
                    assert await sender.send() == 202
            await support.eventually(lambda: set(handled) >= set(sender.acknowledged), within=20)
        finally:
            await daemon.stop()

    assert sender.refused >= 5
    assert sorted(handled) == sorted(set(handled)), "an event was handled twice"
    assert set(handled) == set(sender.acknowledged)
    db = sqlite3.connect(small_disk / "journal.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {row[0] for row in db.execute("SELECT id FROM events")}
    finally:
        db.close()
    missing = set(sender.acknowledged) - stored
    assert not missing, f"acknowledged events lost: {sorted(missing)[:5]}"
    # The operator reads the cause, not a failed ROLLBACK.
    lines = [str(line) for line in logs]
    assert not [line for line in lines if "cannot rollback" in line], lines
    # (in the refused delivery's reason, and in the settler's error when a settle met the full disk too)
    causes = [str(line.get("error", "")) + str(line.get("reason", "")) for line in logs]
    assert [cause for cause in causes if "database or disk is full" in cause], lines


async def _taken(sender: Sender) -> bool:
    return await sender.send() == 202
