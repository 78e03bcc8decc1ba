"""``glue explain``, ``glue replay`` and ``glue dlq`` as an operator runs them: files in, lines out.

Output goes to a pipe here, so the commands print JSON lines (a table only on a terminal). The live
run in the replay test is the real daemon (HTTP intake on a loopback port, SQLite journal, executor).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from structlog.testing import capture_logs

import handlers.http
import handlers.log
from glue import app, cli, events, journal, settings
from tests.execution.conftest import delivery_of
from tests.support import cloudevent

ROUTES = [
    {
        "name": "forward",
        "handler": "http",
        "match": 'type == "com.example.push" && data.repo.startsWith("team-a/")',
        "params": {"url": "https://hooks.example.com/{{ data.repo }}?key=s3cret", "mode": "structured"},
        "dryRun": True,
    },
    {"name": "note", "handler": "log", "params": {"message": "{{ type }} {{ id }}"}, "dryRun": True},
]


def write_config(tmp_path: Path, **extra: Any) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "journal": {"path": str(tmp_path / "glue.db"), "groupCommitMs": 0},
        "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
        "execution": {"pollSeconds": 0.02},
        "routes": ROUTES,
        **extra,
    }
    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def push(id: str, repo: str) -> Any:
    return cloudevent(id, type="com.example.push", source="/git", data={"repo": repo})


# -- explain ---------------------------------------------------------------------------------------


def test_explain_names_the_false_condition_and_its_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(events.to_json(push("p1", "team-b/api")) + b"\n")
    assert cli.main(["explain", "--config", str(config), str(events_file)]) == 0
    forward, note = json_lines(capsys.readouterr().out)
    assert (forward["route"], forward["matched"]) == ("forward", False)
    assert forward["condition"] == 'data.repo.startsWith("team-a/")'
    assert forward["values"] == {"data.repo": "team-b/api"}
    assert forward["why"] == 'data.repo.startsWith("team-a/") is false'
    assert (note["matched"], note["params"]) == (
        True,
        {"message": "com.example.push p1", "level": "info", "fields": {}},
    )


def test_explain_decodes_a_payload_with_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    payload = tmp_path / "payload.json"
    payload.write_bytes(events.to_json(push("p2", "team-a/web")))
    code = cli.main(
        [
            "explain",
            "-c",
            str(config),
            "--format",
            "cloudevents",
            "-H",
            "Content-Type: application/cloudevents+json",
            str(payload),
        ]
    )
    assert code == 0
    forward, _ = json_lines(capsys.readouterr().out)
    assert forward["matched"] is True
    assert forward["params"]["url"] == "https://hooks.example.com/team-a/web?key=s3cret"


def test_check_reports_route_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = [{**ROUTES[0], "match": "data.repo.startsWith("}, {"name": "x", "handler": "nope"}]
    config = write_config(tmp_path, routes=broken)
    assert cli.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: routes[0] (forward).match: not valid CEL" in err
    assert f"{config}: routes[1] (x).handler: unknown handler 'nope'" in err
    assert "Traceback" not in err


# -- replay ----------------------------------------------------------------------------------------


async def test_replay_of_a_recording_in_dry_run_yields_the_plans_of_the_live_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "recording.jsonl"
    config = write_config(tmp_path, record=str(recording))
    sent = [push("p1", "team-a/api"), push("p2", "team-b/api"), cloudevent("o1", type="com.example.other")]
    daemon = app.Daemon(settings.load(config))
    with capture_logs() as logs:
        await daemon.start()
        try:
            assert daemon.pipeline is not None
            url = f"http://127.0.0.1:{daemon.pipeline.http.port}/events"
            async with aiohttp.ClientSession() as session:
                for event in sent:
                    headers = {"Content-Type": "application/cloudevents+json"}
                    async with session.post(url, data=events.to_json(event), headers=headers) as response:
                        assert response.status == 202
            deadline = time.monotonic() + 20
            while len([e for e in logs if e["event"] == "dispatched"]) < 4:  # p1: 2 routes, p2 and o1: note
                assert time.monotonic() < deadline, logs
                await asyncio.sleep(0.05)
        finally:
            await daemon.stop()
    live = {(e["event_id"], e["route"]): e["plan"] for e in logs if e["event"] == "dispatched"}
    assert all(e["outcome"] == "planned" for e in logs if e["event"] == "dispatched")
    assert set(live) == {("p1", "forward"), ("p1", "note"), ("p2", "note"), ("o1", "note")}

    code = await asyncio.to_thread(cli.main, ["replay", "--config", str(config), "--dry-run", str(recording)])
    assert code == 0
    replayed = {(row["event"], row["route"]): row["plan"] for row in json_lines(capsys.readouterr().out)}
    assert replayed == live
    forward = replayed[("p1", "forward")]["calls"][0]
    assert forward["target"] == "https://hooks.example.com/team-a/api", (
        "the query (a credential) is not shown"
    )
    assert "s3cret" not in recording.read_text() + orjson.dumps(list(replayed.values())).decode()


def test_replay_dry_run_of_cloudevents_with_route_and_since(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    file = tmp_path / "events.jsonl"
    file.write_bytes(
        b"".join(events.to_json(e) + b"\n" for e in (push("a", "team-a/x"), push("b", "team-a/y")))
    )
    assert cli.main(["replay", "-c", str(config), "--dry-run", "--route", "forward", str(file)]) == 0
    rows = json_lines(capsys.readouterr().out)
    assert [(r["event"], r["route"], r["outcome"]) for r in rows] == [
        ("a", "forward", "planned"),
        ("b", "forward", "planned"),
    ]
    assert cli.main(["replay", "-c", str(config), "--dry-run", "--route", "nope", str(file)]) == 2
    assert "no route named 'nope'" in capsys.readouterr().err


def test_replay_into_the_journal_goes_through_the_decoders_and_dedups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    recording = tmp_path / "rec.jsonl"
    lines = [delivery_of(push("r1", "team-a/x")).to_record(), delivery_of(push("r2", "team-a/y")).to_record()]
    broken = {**lines[0], "body": "{not json"}
    recording.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in [*lines, lines[0], broken]))
    assert cli.main(["replay", "-c", str(config), str(recording)]) == 1  # one line failed to decode
    captured = capsys.readouterr()
    assert (
        captured.out.strip() == "3 deliveries replayed: 2 new events journaled, 1 already journaled, 1 failed"
    )
    assert f"{recording}:4: does not decode" in captured.err
    assert cli.main(["events", "list", "-c", str(config)]) == 0
    assert [row["id"] for row in json_lines(capsys.readouterr().out)] == ["r1", "r2"]


def test_replay_of_a_jetstream_delivery_takes_its_subjects_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = {
        "url": "nats://127.0.0.1:4222",
        "stream": "platform",
        "subjects": [
            {"subject": "hooks.*", "format": "argo", "type": "com.example.hook", "source": "/hooks"},
            {"subject": "other.>", "format": "argo", "type": "com.example.other", "source": "/other"},
        ],
    }
    config = write_config(tmp_path, sources={"jetstream": stream})
    delivery = events.Delivery(
        transport="jetstream",
        endpoint="platform",
        format="argo",
        headers={"nats-subject": "hooks.deploy", "content-type": "application/json"},
        body=orjson.dumps({"id": "h-1", "app": "api"}),
    )
    recording = tmp_path / "rec.jsonl"
    recording.write_bytes(orjson.dumps(delivery.to_record()) + b"\n")
    assert cli.main(["replay", "-c", str(config), str(recording)]) == 0
    capsys.readouterr()
    assert cli.main(["events", "list", "-c", str(config)]) == 0
    [row] = json_lines(capsys.readouterr().out)
    assert (row["type"], row["source"]) == ("com.example.hook", "/hooks")


def test_replay_with_a_rate_is_paced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    file = tmp_path / "events.jsonl"
    file.write_bytes(b"".join(events.to_json(push(f"e{i}", "team-a/x")) + b"\n" for i in range(6)))
    started = time.monotonic()
    assert cli.main(["replay", "-c", str(config), "--dry-run", "--rate", "20", str(file)]) == 0
    assert time.monotonic() - started >= 5 / 20 - 0.01
    assert len(json_lines(capsys.readouterr().out)) == 12


# -- dlq -------------------------------------------------------------------------------------------


def make_dead_letters(config: Path, count: int) -> list[int]:
    async def run() -> list[int]:
        store = journal.create(settings.load(config).journal)
        await store.open()
        try:
            for i in range(count):
                event = push(f"d{i}", "team-a/x")
                await store.append(delivery_of(event), [event])
            claimed = await store.claim_events("t", limit=100, lease=30, now=time.time())
            await store.record_routing(
                "t",
                {
                    e.seq: [
                        journal.NewInvocation(
                            route="forward" if e.seq % 2 else "note",
                            handler="http",
                            idempotency_key=journal.idempotency_key(e.identity, "forward"),
                            params={"url": "https://x"},
                            due_at=time.time(),
                            state="dead",
                            error="HTTP 404",
                        )
                    ]
                    for e in claimed
                },
                now=time.time(),
            )
            return [i.id for i in await store.invocations(state="dead")]
        finally:
            await store.close()

    return asyncio.run(run())


def test_dlq_list_show_retry_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    ids = make_dead_letters(Path(config), 4)
    assert cli.main(["dlq", "list", "-c", config]) == 0
    rows = json_lines(capsys.readouterr().out)
    assert [(r["id"], r["event"], r["lastError"]) for r in rows] == [
        (i, f"d{n}", "HTTP 404") for n, i in enumerate(ids)
    ]

    assert cli.main(["dlq", "show", "-c", config, str(ids[0])]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["cloudevent"]["id"] == "d0" and shown["params"] == {"url": "https://x"}
    assert shown["delivery"]["format"] == "cloudevents"

    assert cli.main(["dlq", "retry", "-c", config, "--route", "forward", "--dry-run"]) == 0
    captured = capsys.readouterr()
    would = json_lines(captured.out)
    assert {r["route"] for r in would} == {"forward"} and len(would) == 2
    assert "2 invocations would be retried (dry run)" in captured.err
    assert cli.main(["dlq", "list", "-c", config]) == 0
    assert len(json_lines(capsys.readouterr().out)) == 4, "a dry run changes nothing"

    assert cli.main(["dlq", "retry", "-c", config, "--route", "forward"]) == 0
    assert capsys.readouterr().out.strip() == "2 invocations retried"
    assert cli.main(["dlq", "retry", "-c", config]) == 2
    assert "give invocation ids, or a filter" in capsys.readouterr().err
    assert cli.main(["dlq", "purge", "-c", config, str(ids[0])]) == 1  # retried: no longer dead
    assert "not in the dead-letter queue: " in capsys.readouterr().err

    remaining = [r["id"] for r in json_lines(_run(capsys, ["dlq", "list", "-c", config]))]
    assert cli.main(["dlq", "purge", "-c", config, str(remaining[0])]) == 0
    assert capsys.readouterr().out.strip() == "1 invocations purged"
    assert cli.main(["dlq", "purge", "-c", config, "--all"]) == 0
    assert capsys.readouterr().out.strip() == "1 invocations purged"
    assert json_lines(_run(capsys, ["dlq", "list", "-c", config])) == []


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(argv) == 0
    return capsys.readouterr().out


BUILT_INS = (handlers.http, handlers.log)  # imported for their registrations: the routes name them


def test_explain_an_event_in_the_journal_with_what_ran_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    make_dead_letters(Path(config), 1)  # event d0 (team-a/x): its "forward" invocation is dead
    assert cli.main(["explain", "-c", config, "--event", "d0"]) == 0
    forward, note = json_lines(capsys.readouterr().out)
    assert (forward["route"], forward["matched"], forward["state"], forward["lastError"]) == (
        "forward",
        True,
        "dead",
        "HTTP 404",
    )
    assert (note["route"], note["matched"], note.get("state")) == ("note", True, None)
    assert cli.main(["explain", "-c", config, "--event", "nope"]) == 1
    assert "no event 'nope' in the journal" in capsys.readouterr().err


def test_replay_dry_run_of_a_resend_plans_once_and_marks_the_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook sent twice (the producer retried): the daemon journals it once and acts once, and so
    does the dry-run."""
    config = write_config(tmp_path)
    recording = tmp_path / "recording.jsonl"
    lines = [delivery_of(push("a", "team-a/x")), delivery_of(push("b", "team-a/y"))]
    lines.append(delivery_of(push("a", "team-a/x")))  # the resend
    recording.write_bytes(b"".join(orjson.dumps(d.to_record()) + b"\n" for d in lines))
    assert cli.main(["replay", "-c", str(config), "--dry-run", "--route", "forward", str(recording)]) == 0
    rows = json_lines(capsys.readouterr().out)
    assert [(r["event"], r.get("route"), r["outcome"]) for r in rows] == [
        ("a", "forward", "planned"),
        ("b", "forward", "planned"),
        ("a", None, "duplicate"),
    ]
    assert rows[2]["error"].startswith(f"already delivered at {recording}:1")
