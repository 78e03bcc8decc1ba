"""A dry-run invocation ends ``planned`` with its plan, and every attempt is kept: what ``glue events
show``, ``glue events invocations``, ``glue explain --event`` and ``glue dlq show`` print after the real
daemon (HTTP intake on a loopback port, SQLite journal, executor) ran the routes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

import handlers.http
import handlers.log
from glue import app, cli, events, journal, settings
from tests import support

from .test_explain_replay_dlq import json_lines, push, write_config

BUILT_INS = (handlers.http, handlers.log)  # imported for their registrations: the routes name them


async def run_daemon(config: Path, sent: list[Any], until: Any) -> None:
    """Start the daemon on ``config``, post ``sent``, wait until ``until(journal)`` holds, stop."""
    daemon = app.Daemon(settings.load(config))
    await daemon.start()
    try:
        assert daemon.pipeline is not None
        url = f"http://127.0.0.1:{daemon.pipeline.http.port}/events"
        async with aiohttp.ClientSession() as session:
            for event in sent:
                headers = {"Content-Type": "application/cloudevents+json"}
                async with session.post(url, data=events.to_json(event), headers=headers) as response:
                    assert response.status == 202
        store = daemon.journal
        await support.eventually(lambda: until(store), within=20)
    finally:
        await daemon.stop()


async def states(store: journal.Journal) -> list[str]:
    return [i.state for i in await store.invocations()]


def out(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> str:
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    return captured.out if code == 0 else captured.err


async def test_a_dry_run_invocation_is_shown_planned_with_its_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)

    async def both_planned(store: journal.Journal) -> bool:
        return await states(store) == ["planned", "planned"]

    await run_daemon(config, [push("p1", "team-a/api")], both_planned)
    capsys.readouterr()  # the daemon's log lines
    c = str(config)

    shown = orjson.loads(await asyncio.to_thread(out, capsys, ["events", "show", "-c", c, "p1"]))
    by_route = {i["route"]: i for i in shown["invocations"]}
    forward = by_route["forward"]
    assert forward["state"] == "planned"
    assert forward["plan"]["calls"][0]["target"] == "https://hooks.example.com/team-a/api"
    (attempt,) = forward["attempts"]
    assert (attempt["attempt"], attempt["outcome"], attempt["error"]) == (1, "planned", None)
    assert attempt["startedAt"].endswith("+00:00") and attempt["durationMs"] >= 0
    assert by_route["note"]["plan"]["summary"], "the log handler's plan is kept too"
    assert "s3cret" not in orjson.dumps(forward["plan"]).decode(), "the plan hides the URL's query"

    explained = json_lines(await asyncio.to_thread(out, capsys, ["explain", "-c", c, "--event", "p1"]))
    assert {(r["route"], r["state"]) for r in explained} == {("forward", "planned"), ("note", "planned")}
    assert next(r for r in explained if r["route"] == "forward")["plan"] == forward["plan"]

    listed = json_lines(
        await asyncio.to_thread(out, capsys, ["events", "invocations", "-c", c, "--state", "planned"])
    )
    assert sorted(r["route"] for r in listed) == ["forward", "note"]
    assert (
        json_lines(
            await asyncio.to_thread(out, capsys, ["events", "invocations", "-c", c, "--state", "done"])
        )
        == []
    )
    routes = json_lines(await asyncio.to_thread(out, capsys, ["routes", "list", "-c", c]))
    assert {(r["route"], r["planned"], r["done"]) for r in routes} == {("forward", 1, 0), ("note", 1, 0)}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["events", "invocations", "-c", c, "--state", "finished"])
    assert exit_.value.code == 2
    refused = capsys.readouterr().err
    assert "invalid choice: 'finished'" in refused and "planned" in refused


async def test_dlq_show_lists_every_attempt_of_a_dead_letter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: every attempt is refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    routes = [
        {
            "name": "forward",
            "handler": "http",
            "params": {"url": f"http://127.0.0.1:{closed}/hook"},
            "delivery": {"attempts": 3, "backoff": {"initial": 0.01, "max": 0.02}, "timeout": 2},
        }
    ]
    config = write_config(tmp_path, routes=routes)

    async def dead(store: journal.Journal) -> bool:
        return await states(store) == ["dead"]

    await run_daemon(config, [push("p1", "team-a/api")], dead)
    capsys.readouterr()  # the daemon's log lines
    (row,) = json_lines(await asyncio.to_thread(out, capsys, ["dlq", "list", "-c", str(config)]))
    shown = orjson.loads(
        await asyncio.to_thread(out, capsys, ["dlq", "show", "-c", str(config), str(row["id"])])
    )
    attempts = shown["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retry"), (2, "retry"), (3, "dead")]
    assert all(a["error"] and a["durationMs"] is not None for a in attempts)
    assert attempts[-1]["error"] == shown["lastError"]
    assert attempts[0]["startedAt"] <= attempts[1]["startedAt"] <= attempts[2]["startedAt"]
