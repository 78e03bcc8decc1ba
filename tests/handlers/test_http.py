"""The built-in ``http`` handler against a real aiohttp server on a loopback port.

What a receiver sees follows the CloudEvents HTTP protocol binding (binary mode: ``ce-*`` headers and the
data as body; structured mode: ``application/cloudevents+json``); Retry-After follows RFC 9110 10.2.3.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

import glue
import handlers.http as http_handler
from glue import contract, journal, routing, settings
from tests.execution.conftest import Append, Harness, wait_for
from tests.support import cloudevent


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target.url = f"http://127.0.0.1:{port}/hook"
    yield target
    await runner.cleanup()


@pytest.fixture
def registry() -> contract.Registry:
    registry = contract.Registry()
    registry.add(glue.registry.handlers["http"])
    registry.add_client(glue.registry.clients["http"])
    return registry


def post_route(url: str, **extra: Any) -> list[dict[str, Any]]:
    delivery = {"attempts": 3, "backoff": {"initial": 300, "jitter": 0, "max": 600}}
    return [{"name": "forward", "handler": "http", "params": {"url": url, **extra}, "delivery": delivery}]


async def settled(store: journal.Journal) -> bool:
    rows = await store.invocations()
    return bool(rows) and all(row.state in ("done", "dead") or row.last_error for row in rows)


async def test_binary_mode_posts_attributes_as_headers(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver
) -> None:
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url))
    await append(cloudevent("e1", source="/registry", data={"tag": "v1"}, subject="team-a/api"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    ((headers, body),) = receiver.requests
    assert (headers["ce-id"], headers["ce-source"], headers["ce-type"]) == (
        "e1",
        "/registry",
        "com.example.test",
    )
    assert headers["ce-subject"] == "team-a/api"
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "forward /registry e1"
    assert orjson.loads(body) == {"tag": "v1"}
    (row,) = await store.invocations()
    assert row.state == "done"


async def test_structured_mode_posts_the_whole_event(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver
) -> None:
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url, mode="structured"))
    await append(cloudevent("e2", data={"tag": "v2"}))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    ((headers, body),) = receiver.requests
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    document = orjson.loads(body)
    assert (document["id"], document["specversion"], document["data"]) == ("e2", "1.0", {"tag": "v2"})


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_delay"),
    [
        (503, "7", 7.0),
        (429, "120", 120.0),
        (500, None, 300.0),  # no Retry-After: the route's backoff
        (502, "date+30", 30.0),
    ],
)
async def test_429_and_5xx_are_retried_honouring_retry_after(
    harness: Harness,
    append: Append,
    store: journal.Journal,
    receiver: Receiver,
    status: int,
    retry_after: str | None,
    expected_delay: float,
) -> None:
    headers: dict[str, str] = {}
    if retry_after == "date+30":
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
        headers["Retry-After"] = email.utils.format_datetime(when, usegmt=True)
    elif retry_after is not None:
        headers["Retry-After"] = retry_after
    receiver.answers.append((status, headers))
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url))
    await append(cloudevent("e3"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert row.state == "pending" and row.attempt == 1
    assert row.last_error is not None and row.last_error.startswith(
        f"TemporaryError: POST {receiver.url}: HTTP {status}"
    )
    assert row.due_at - row.updated_at == pytest.approx(expected_delay, abs=1.5)


@pytest.mark.parametrize("status", [400, 404, 410, 422])
async def test_other_4xx_dead_letter_at_once(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver, status: int
) -> None:
    receiver.answers.append((status, {}))
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url))
    await append(cloudevent("e4"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert (row.state, row.attempt) == ("dead", 1)
    assert row.last_error is not None and f"HTTP {status}" in row.last_error


async def test_unreachable_receiver_is_temporary(
    harness: Harness, append: Append, store: journal.Journal
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await harness.start(pollSeconds=0.02, routes=post_route(f"http://127.0.0.1:{port}/hook"))
    await append(cloudevent("e7"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert (row.state, row.attempt) == ("pending", 1)
    assert row.last_error == f"TemporaryError: POST http://127.0.0.1:{port}/hook: ClientConnectorError"


async def test_secrets_in_the_url_stay_out_of_errors(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver
) -> None:
    url = (
        receiver.url.replace("127.0.0.1", "user:hunter2@127.0.0.1").replace("/hook", "/nowhere")
        + "?token=s3cret"
    )
    receiver.answers.append((404, {}))
    await harness.start(pollSeconds=0.02, routes=post_route(url))
    await append(cloudevent("e5"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert row.last_error is not None
    assert "hunter2" not in row.last_error and "s3cret" not in row.last_error
    assert row.last_error.endswith("/nowhere: HTTP 404 Not Found")


async def test_dry_run_plan_is_the_request_it_would_make(registry: contract.Registry) -> None:
    clients = contract.Clients(registry, {})
    ctx = glue.Context(
        route="forward",
        handler="http",
        idempotency_key="forward /s e6",
        attempt=1,
        dry_run=True,
        log=None,  # type: ignore[arg-type]
        clients=clients,
    )
    params = http_handler.HttpParams(url="https://hooks.example.com/in?key=s3cret", mode="binary")  # type: ignore[arg-type]
    plan = await http_handler.post(event=cloudevent("e6", source="/s", data={"a": 1}), params=params, ctx=ctx)
    assert plan is not None
    (call,) = plan.calls
    assert (call.method, call.target) == ("POST", "https://hooks.example.com/in")
    assert call.body["body"] == {"a": 1}
    assert (
        call.body["headers"]["ce-id"] == "e6" and call.body["headers"]["Idempotency-Key"] == "forward /s e6"
    )
    assert "s3cret" not in orjson.dumps(plan.to_dict()).decode()
    await clients.aclose()


# -- outbound authentication: bearer, basic or an HMAC signature, from a secret file or variable; never in
# the config text, a plan, a log line or the journal.

SECRET = "s3cret-for-the-receiver"


async def delivered(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver, auth: Any
) -> tuple[dict[str, str], bytes]:
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url, auth=auth))
    with capture_logs() as logs:
        await append(cloudevent("e1", source="/s", data={"a": 1}))
        await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert row.state == "done", row.last_error
    assert SECRET not in repr(logs) + orjson.dumps(dict(row.params)).decode()
    ((headers, body),) = receiver.requests
    return headers, body


async def test_bearer_from_an_environment_variable(
    harness: Harness,
    append: Append,
    store: journal.Journal,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    headers, _ = await delivered(
        harness, append, store, receiver, {"type": "bearer", "secret": {"env": "HOOK_TOKEN"}}
    )
    assert headers["Authorization"] == f"Bearer {SECRET}"


async def test_basic_from_a_file(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")
    auth = {"type": "basic", "username": "glue", "secret": {"file": str(tmp_path / "password")}}
    headers, _ = await delivered(harness, append, store, receiver, auth)
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"glue:{SECRET}".encode()).decode()


async def test_hmac_signature_of_the_body_sent(
    harness: Harness, append: Append, store: journal.Journal, receiver: Receiver, tmp_path: Path
) -> None:
    (tmp_path / "key").write_text(SECRET)
    auth = {"type": "hmac-sha256", "header": "X-Hub-Signature-256", "secret": {"file": str(tmp_path / "key")}}
    headers, body = await delivered(harness, append, store, receiver, auth)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={expected}"


async def test_a_missing_secret_dead_letters_with_its_name_only(
    harness: Harness,
    append: Append,
    store: journal.Journal,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    auth = {"type": "bearer", "secret": {"env": "HOOK_TOKEN"}}
    await harness.start(pollSeconds=0.02, routes=post_route(receiver.url, auth=auth))
    await append(cloudevent("e1"))
    await wait_for(lambda: settled(store), seconds=10, step=0.02)
    (row,) = await store.invocations()
    assert row.state == "dead" and "HOOK_TOKEN is empty or not set" in (row.last_error or "")
    assert receiver.requests == []


def test_an_inline_secret_is_refused_when_the_config_loads(registry: contract.Registry) -> None:
    route = post_route("https://hooks.example.com/in", auth={"type": "bearer", "secret": {"value": SECRET}})
    with pytest.raises(settings.ConfigError) as refused:
        routing.load(route, registry, source="glue.yaml")
    assert "routes[0] (forward).params.auth.secret.value: Extra inputs are not permitted" in str(
        refused.value
    )
    assert SECRET not in str(refused.value)


async def test_dry_run_plan_shows_the_header_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    clients = contract.Clients(glue.registry, {})
    ctx = glue.Context(
        route="forward",
        handler="http",
        idempotency_key="k",
        attempt=1,
        dry_run=True,
        log=None,  # type: ignore[arg-type]
        clients=clients,
    )
    params = http_handler.HttpParams.model_validate(
        {"url": "https://hooks.example.com/in", "auth": {"type": "bearer", "secret": {"env": "HOOK_TOKEN"}}}
    )
    plan = await http_handler.post(event=cloudevent("e6"), params=params, ctx=ctx)
    assert plan is not None
    (call,) = plan.calls
    assert call.body["headers"]["Authorization"] == "<redacted>"
    assert SECRET not in orjson.dumps(plan.to_dict()).decode()
