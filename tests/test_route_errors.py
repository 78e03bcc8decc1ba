"""A route expression that fails on an event is counted and logged, not a quiet non-match.

``glue_route_errors_total{route,kind}`` counts every failure (kind: match, params, orderingKey); a
``route expression failed`` line names the route, the expression and the error, at most once per route
a minute (the lines not written are counted in the next one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from glue import app, contract, routing, settings
from tests import support


def errors(route: str, kind: str) -> float:
    return support.metric("glue_route_errors_total", route=route, kind=kind)


async def test_a_match_that_fails_on_live_events_is_counted_and_logged_once(tmp_path: Path) -> None:
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "events", "path": "/events", "format": "cloudevents"}],
        routes=[{"name": "prod-only", "match": 'data.stage == "prod"', "handler": "log"}],
    )
    app.load_plugins(config)
    before = errors("prod-only", "match")
    with capture_logs() as logs:
        async with support.running(config) as daemon, aiohttp.ClientSession() as session:
            for n in range(3):
                event = {"specversion": "1.0", "id": str(n), "source": "/t", "type": "t", "data": {"x": 1}}
                headers = {"Content-Type": "application/cloudevents+json"}
                url = support.base_url(daemon) + "/events"
                async with session.post(url, json=event, headers=headers) as answer:
                    assert answer.status == 202
            await support.eventually(lambda: errors("prod-only", "match") - before == 3)
    [line] = [e for e in logs if e["event"] == "route expression failed"]
    assert (line["route"], line["kind"], line["expression"]) == ("prod-only", "match", 'data.stage == "prod"')
    assert "stage" in line["error"]


def router(**route: Any) -> routing.Router:
    routes = [{"handler": "log", **route}]
    app.load_plugins(settings.from_mapping({"routes": routes}))
    return routing.load(routes, contract.registry)


@pytest.mark.parametrize(
    ("route", "kind", "expression"),
    [
        ({"params": {"message": "{{ data.nope }}"}}, "params", {"message": "{{ data.nope }}"}),
        ({"orderingKey": "{{ data.nope }}"}, "orderingKey", "{{ data.nope }}"),
        ({"match": "data.count + 1 > 2"}, "match", "data.count + 1 > 2"),
    ],
    ids=["params", "orderingKey", "no-such-overload"],
)
def test_each_kind_is_counted_with_its_expression(
    route: dict[str, Any], kind: str, expression: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing, "ERROR_LOG_SECONDS", 0.0)  # every failure logged
    name = f"r-{kind.lower()}"
    routes = router(name=name, **route)
    before = errors(name, kind)
    event = support.cloudevent("1", data={"count": "three"})
    with capture_logs() as logs:
        routes.invocations_of("id-1", event, now=0.0)
        routes.invocations_of("id-2", event, now=0.0)
    assert errors(name, kind) - before == 2
    lines = [e for e in logs if e["event"] == "route expression failed"]
    assert [(e["route"], e["kind"], e["expression"]) for e in lines] == [(name, kind, expression)] * 2


def test_lines_not_written_are_counted_in_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = router(name="r-quiet", match="data.missing")
    event = support.cloudevent("1", data={})
    with capture_logs() as logs:
        for _ in range(4):
            routes.invocations_of("id", event, now=0.0)
        monkeypatch.setattr(routing, "ERROR_LOG_SECONDS", 0.0)
        routes.invocations_of("id", event, now=0.0)
    lines = [e for e in logs if e["event"] == "route expression failed"]
    assert [e["not_logged_since"] for e in lines] == [0, 3]
