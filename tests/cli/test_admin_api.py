"""The admin API of a running daemon, and `glue --server URL` acting through it: bearer tokens (a
missing or wrong one is 401 and logged, never the token), the token's name as who in the audit trail,
JSON in and out, and the webhook port serving none of it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from glue import app
from tests.support import admin_url, base_url, daemon_settings, eventually, running

TOKEN = "s3cret-admin-token-for-tests"


async def glue_cli(*args: str, token_file: Path | None = None) -> tuple[int, str, str]:
    """``glue ARGS`` in its own process: exit code, stdout, stderr."""
    extra = ["--token-file", str(token_file)] if token_file is not None else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "glue.cli",
        *args[:2],
        *extra,
        *args[2:],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("GLUE_TEST_OPS_TOKEN", TOKEN)
    (tmp_path / "ci.token").write_text("another-token-for-ci\n")
    loaded = daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        admin={
            "host": "127.0.0.1",
            "port": 0,
            "tokens": {
                "ops": {"env": "GLUE_TEST_OPS_TOKEN"},
                "ci": {"file": str(tmp_path / "ci.token")},
                "oncall-ro": {"value": "a-read-only-token"},
            },
            "viewers": ["oncall-ro"],
        },
        endpoints=[{"name": "ce", "path": "/events", "format": "cloudevents"}],
        routes=[
            {"name": "rotate", "handler": "log", "params": {"message": "rotate {{ id }}"}, "approval": {}},
            {"name": "restart", "handler": "log", "params": {"message": "restart"}},
        ],
    )
    app.load_plugins(loaded)
    return loaded


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """The operators' token in a file, for ``glue --server URL --token-file``."""
    path = tmp_path / "ops.token"
    path.write_text(TOKEN)
    return path


async def test_a_missing_or_wrong_token_is_refused_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(config(tmp_path, monkeypatch)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        with capture_logs() as logs:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
                async with http.get(f"{url}/v1/routes", headers=headers) as response:
                    assert response.status == 401
                    assert await response.json() == {"error": "a valid bearer token is required"}
            async with http.post(f"{url}/v1/pause", json={"reason": "x"}) as response:
                assert response.status == 401
        refused = [line for line in logs if line["event"] == "admin API refused"]
        assert [line["reason"] for line in refused] == [
            "missing bearer token",
            "wrong bearer token",
            "wrong bearer token",
            "missing bearer token",
        ]
        assert all(line["path"].startswith("/v1/") for line in refused)
        assert TOKEN not in repr(logs)
        # nothing changed: the unauthenticated pause did not pause
        assert await daemon.journal.rails() == {}
        # the webhook port serves none of the admin paths
        async with http.get(
            f"{base_url(daemon)}/v1/routes", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            assert r.status == 404


async def test_a_viewer_token_reads_but_may_not_act(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(config(tmp_path, monkeypatch)) as daemon, aiohttp.ClientSession() as http:
        url, headers = admin_url(daemon), {"Authorization": "Bearer a-read-only-token"}
        async with http.get(f"{url}/v1/routes", headers=headers) as response:
            assert response.status == 200
            assert [row["route"] for row in await response.json()] == ["rotate", "restart"]
        with capture_logs() as logs:
            async with http.post(f"{url}/v1/routes/restart/pause", headers=headers, json={}) as response:
                assert response.status == 403
                assert await response.json() == {"error": "oncall-ro may only read (role viewer)"}
        assert [line["who"] for line in logs if line["event"] == "admin API refused"] == ["oncall-ro"]
        assert await daemon.journal.rails() == {}
        assert [entry.action for entry in await daemon.journal.audit()] == ["start"]


async def test_glue_server_pauses_lists_approves_and_audits_through_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    async with running(config(tmp_path, monkeypatch)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        code, out, err = await glue_cli(
            "--server",
            url,
            "routes",
            "pause",
            "restart",
            "--reason",
            "bad rule",
            "--for",
            "30m",
            token_file=token_file,
        )
        assert code == 0, err
        assert out.startswith("paused route restart until ")
        code, out, _ = await glue_cli("--server", url, "routes", "list", token_file=token_file)
        rows = {row["route"]: row for row in map(orjson.loads, out.splitlines())}
        assert rows["restart"]["state"] == "paused" and rows["restart"]["why"] == "bad rule (by ops)"
        assert rows["rotate"]["state"] == "live"
        # a rotation waits for approval; glue --server approves it
        headers = {"ce-specversion": "1.0", "ce-id": "rot-1", "ce-source": "/bao", "ce-type": "rotate"}
        async with http.post(f"{base_url(daemon)}/events", data=b"{}", headers=headers) as response:
            assert response.status == 202

        async def awaiting() -> Any:
            found = await daemon.journal.invocations(state="awaiting-approval")
            return found[0] if found else None

        item = await eventually(awaiting, within=10)
        code, out, err = await glue_cli(
            "--server", url, "approve", str(item.id), "--note", "CHG-1", token_file=token_file
        )
        assert code == 0, err
        assert "approved: it runs now" in out

        async def done() -> bool:
            row = await daemon.journal.invocation(item.id)
            return row is not None and row.state == "done"

        await eventually(done, within=10)
        code, out, err = await glue_cli("--server", url, "approve", str(item.id), token_file=token_file)
        assert code == 1 and "HTTP 409" in err and "not awaiting approval" in err
        code, out, err = await glue_cli("--server", url, "routes", "pause", "nope", token_file=token_file)
        assert code == 1 and "HTTP 404" in err and "no route 'nope'" in err
        code, out, _ = await glue_cli("--server", url, "audit", token_file=token_file)
        trail = [(e["who"], e["action"], e["route"]) for e in map(orjson.loads, out.splitlines())]
        assert trail[1:] == [("ops", "pause", "restart"), ("ops", "approve", "rotate")]
        # a bad body is a 400 with the reason, not a trace
        async with http.post(
            f"{url}/v1/routes/restart/pause", data=b"[1]", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 400
            assert await response.json() == {"error": "the body must be a JSON object"}
    code, _, err = await glue_cli("--server", url, "routes", "list")
    assert code == 2 and "needs a token" in err


async def test_glue_server_lists_shows_retries_and_purges_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    async with running(config(tmp_path, monkeypatch)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)

        async def dead_letter(event_id: str) -> int:
            """A rotation denied through the API: it is in the dead-letter queue."""
            headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "/bao", "ce-type": "rotate"}
            async with http.post(f"{base_url(daemon)}/events", data=b"{}", headers=headers) as response:
                assert response.status == 202

            async def awaiting() -> Any:
                stored = await daemon.journal.get(event_id)
                if stored is None:
                    return None
                found = await daemon.journal.invocations(state="awaiting-approval", event_seq=stored.seq)
                return found[0].id if found else None

            number: int = await eventually(awaiting, within=10)
            code, _, err = await glue_cli("--server", url, "deny", str(number), token_file=token_file)
            assert code == 0, err
            return number

        first = await dead_letter("rot-1")
        code, out, err = await glue_cli("--server", url, "dlq", "list", token_file=token_file)
        assert code == 0, err
        [row] = map(orjson.loads, out.splitlines())
        assert (row["id"], row["route"], row["event"], row["type"]) == (first, "rotate", "rot-1", "rotate")
        code, out, err = await glue_cli("--server", url, "dlq", "show", str(first), token_file=token_file)
        assert code == 0, err
        shown = orjson.loads(out)
        assert shown["state"] == "dead" and shown["cloudevent"]["id"] == "rot-1"

        code, out, err = await glue_cli(
            "--server", url, "dlq", "retry", "--route", "rotate", "--dry-run", token_file=token_file
        )
        assert code == 0 and "1 invocations would be retried (dry run)" in err
        assert [orjson.loads(line)["id"] for line in out.splitlines()] == [first]
        assert (await daemon.journal.invocation(first)).state == "dead"  # type: ignore[union-attr]

        # a viewer may list the queue but not empty it
        viewer = {"Authorization": "Bearer a-read-only-token"}
        async with http.post(f"{url}/v1/dlq/retry", headers=viewer, json={"ids": [first]}) as response:
            assert response.status == 403
        with capture_logs() as logs:
            code, out, err = await glue_cli(
                "--server", url, "dlq", "retry", str(first), token_file=token_file
            )
        assert code == 0 and out.strip() == "1 invocations retried", err
        assert [line["invocations"] for line in logs if line["event"] == "dead letters retried"] == [[first]]

        async def asks_again() -> bool:  # a retried rotation asks for approval again
            row = await daemon.journal.invocation(first)
            return row is not None and row.state == "awaiting-approval"

        await eventually(asks_again, within=10)

        second = await dead_letter("rot-2")
        code, out, err = await glue_cli("--server", url, "dlq", "purge", str(first), token_file=token_file)
        assert code == 1 and "HTTP 404" in err and f"not in the dead-letter queue: {first}" in err
        code, out, err = await glue_cli(
            "--server", url, "dlq", "purge", "--route", "rotate", token_file=token_file
        )
        assert code == 0 and out.strip() == "1 invocations purged", err
        assert await daemon.journal.invocation(second) is None
        code, out, _ = await glue_cli("--server", url, "audit", token_file=token_file)
        trail = [(e["who"], e["action"], e["target"]) for e in map(orjson.loads, out.splitlines())]
        assert ("ops", "dlq retry", str(first)) in trail and ("ops", "dlq purge", str(second)) in trail
        # a bad selection is a 400 with the reason
        async with http.post(
            f"{url}/v1/dlq/purge", headers={"Authorization": f"Bearer {TOKEN}"}, json={"ids": ["x"]}
        ) as response:
            assert response.status == 400
            assert await response.json() == {"error": "ids: expected a list of invocation ids"}
