"""``glue check`` on the flow-shaping keys (the README's example routes pass; each mistake names file,
field and reason) and ``glue replay --dry-run`` showing how a file of events would be shaped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from glue import app, cli, contract, events, journal, routing, settings
from tests.support import cloudevent

ROOT = Path(__file__).resolve().parents[2]


def readme_routes() -> list[dict[str, Any]]:
    """The example routes of the README's flow-shaping section, as written there."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- flow-example -->", 1)[1].split("<!-- /flow-example -->", 1)[0]
    routes: list[dict[str, Any]] = yaml.safe_load(block.split("```yaml", 1)[1].split("```", 1)[0])["routes"]
    return routes


def write(tmp_path: Path, routes: list[dict[str, Any]]) -> Path:
    path = tmp_path / "glue.yaml"
    path.write_text(yaml.safe_dump({"journal": {"path": str(tmp_path / "j.db")}, "routes": routes}))
    return path


def test_the_readme_examples_pass_glue_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = readme_routes()
    assert {r["name"] for r in routes} == {
        "reload-model-after-upload",
        "release-on-tag",
        "restart-on-rotation",
    }
    assert cli.main(["check", "--config", str(write(tmp_path, routes))]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"coalesce": {"key": "{{ subject }}", "window": "30 seconds"}},
            "coalesce.window: Value error, not a duration: '30 seconds'",
        ),
        (
            {"coalesce": {"key": "{{ subject }}", "window": "5m", "maxWait": "30s"}},
            "maxWait (30 s) is shorter than window (300 s)",
        ),
        (
            {"coalesce": {"key": "{{ subject }}", "window": "5m", "edge": "middle"}},
            "coalesce.edge: Input should be 'trailing' or 'leading'",
        ),
        ({"coalesce": {"key": "{{ subject ", "window": "5m"}}, "(r).coalesce.key: template syntax"),
        (
            {"concurrencyGroup": {"key": "{{ subject }}", "onConflict": "drop"}},
            "concurrencyGroup.onConflict: Input should be 'queue', 'supersede' or 'cancel'",
        ),
        (
            {"concurrencyGroup": {"key": "{{ subject }}"}, "orderingKey": "{{ subject }}"},
            "orderingKey is an alias of concurrencyGroup",
        ),
        ({"rateLimit": {"rate": 0, "per": "1m"}}, "rateLimit.rate: Input should be greater than 0"),
        ({"rateLimit": {"rate": 1, "per": "-1m"}}, "rateLimit.per: Input should be greater than 0"),
        (
            {"rateLimit": {"rate": 1, "burst": 3, "keys": "{{ subject }}"}},
            "rateLimit.keys: Extra inputs are not permitted",
        ),
    ],
    ids=[
        "duration",
        "max-wait",
        "edge",
        "key-syntax",
        "on-conflict",
        "alias-and-group",
        "rate",
        "per",
        "unknown",
    ],
)
def test_check_names_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], expected: str
) -> None:
    config = write(tmp_path, [{"name": "r", "handler": "log", **change}])
    assert cli.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and expected in err, err
    assert "Traceback" not in err


def test_replay_dry_run_shows_how_the_events_would_be_shaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = [
        {
            "name": "reload",
            "handler": "log",
            "match": 'type == "shard"',
            "coalesce": {"key": "{{ data.model }}", "window": "30s", "maxWait": "5m"},
        },
        {
            "name": "release",
            "handler": "log",
            "match": 'type == "tag"',
            "rateLimit": {"rate": 1, "per": "1m", "burst": 1},
            "concurrencyGroup": {"key": "{{ data.repo }}", "onConflict": "supersede"},
        },
    ]
    sent = [cloudevent(f"s{n}", type="shard", data={"model": "llama"}) for n in range(1, 5)]
    sent += [cloudevent(f"t{n}", type="tag", data={"repo": "shop"}) for n in range(1, 4)]
    file = tmp_path / "events.jsonl"
    file.write_bytes(b"".join(events.to_json(e) + b"\n" for e in sent))

    assert cli.main(["replay", "--config", str(write(tmp_path, routes)), "--dry-run", str(file)]) == 0
    rows = {row["event"]: row for row in map(orjson.loads, capsys.readouterr().out.splitlines())}

    for n in (1, 2, 3):  # one a second apart (a file of events has no receive times): inside the window
        assert (rows[f"s{n}"]["outcome"], rows[f"s{n}"]["takenBy"]) == ("coalesced", "s4")
    assert rows["s4"]["outcome"] == "planned" and rows["s4"]["events"] == ["s1", "s2", "s3", "s4"]
    assert rows["s4"]["shaping"] == "runs once for 4 events, 30 s after it arrived"
    assert rows["t1"]["outcome"] == "planned", "the first takes the token"
    assert (rows["t2"]["outcome"], rows["t2"]["takenBy"]) == ("superseded", "t3"), "waiting for a token"
    assert rows["t3"]["outcome"] == "planned" and rows["t3"]["shaping"].startswith(
        "waits for a rate-limit token"
    )


async def test_explain_says_which_invocation_took_an_event_and_why_one_waits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = [
        {
            "name": "reload",
            "handler": "log",
            "match": 'type == "shard"',
            "coalesce": {"key": "{{ data.model }}", "window": "1h"},
        },
        {
            "name": "restart",
            "handler": "log",
            "match": 'type == "rotation"',
            "rateLimit": {"rate": 1, "per": "1h", "burst": 1},
        },
    ]
    config = write(tmp_path, routes)
    loaded = settings.load(config)
    app.load_plugins(loaded)
    router = routing.load(loaded.routes, contract.registry)
    store = journal.create(loaded.journal)
    await store.open()
    try:
        sent = [
            cloudevent("s1", type="shard", data={"model": "m"}),
            cloudevent("s2", type="shard", data={"model": "m"}),
        ]
        sent += [cloudevent("r1", type="rotation"), cloudevent("r2", type="rotation")]
        for event in sent:
            await store.append(
                events.Delivery("http", "e", "cloudevents", {}, events.to_json(event)), [event]
            )
        now = time.time()
        for stored in await store.claim_events("glue", limit=10, lease=60, now=now):
            await store.record_routing("glue", {stored.seq: router.invocations(stored, now=now)}, now=now)
        claimed = await store.claim_invocations("glue", limit=10, lease=60, now=now)
        [first, second] = sorted((i for i in claimed if i.route == "restart"), key=lambda i: i.id)
        assert await store.take_token(first.rate_key or "", rate=1 / 3600, burst=1, now=now) == 0
        wait = await store.take_token(second.rate_key or "", rate=1 / 3600, burst=1, now=now)
        await store.defer("glue", {second.id: now + wait}, reason="rate-limit", now=now)
    finally:
        await store.close()

    async def explain(event_id: str) -> dict[str, Any]:
        args = ["explain", "--config", str(config), "--event", event_id]
        assert await asyncio.to_thread(cli.main, args) == 0
        rows: list[dict[str, Any]] = [
            orjson.loads(line) for line in capsys.readouterr().out.splitlines() if '"matched":true' in line
        ]
        assert len(rows) == 1
        return rows[0]

    s1, s2 = await explain("s1"), await explain("s2")
    assert (s1["state"], s1["takenBy"]) == ("coalesced", s2["invocation"])
    assert s1["why"] == f"coalesced into invocation {s2['invocation']} (it runs for this event too)"
    assert s2["state"] == "pending" and s2["waiting"].startswith("due ")
    r2 = await explain("r2")
    assert r2["state"] == "pending" and r2["waiting"].startswith("rate-limit until ")
