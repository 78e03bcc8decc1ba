"""Property-based fuzzing of the admin API over a real socket, as the webhook endpoints are fuzzed
(tests/sources/http/test_fuzz.py): whatever method, path, query, body and token a client sends, the
answer is a 2xx or a 4xx whose JSON says why, never a 500; without the right token nothing changes."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import strategies as st

from glue import app
from tests import support

TOKEN = "fuzz-admin-token"
ROUTES = ("rotate", "restart", "no-such-route", "", "..", "%00", "r" * 300)
PATHS = [
    "/v1/routes",
    "/v1/routes/{route}/pause",
    "/v1/routes/{route}/resume",
    "/v1/pause",
    "/v1/resume",
    "/v1/invocations/{id}/approve",
    "/v1/invocations/{id}/deny",
    "/v1/audit",
    "/v1/invocations/{id}",
    "/v1/dlq",
    "/v1/dlq/retry",
    "/v1/dlq/purge",
    "/v1/nothing",
    "/",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "reason": st.text(max_size=40) | json_values,
        "for": st.sampled_from(["30m", "1h", "-1s", "0", "soon", "99999999h"]) | json_values,
        "note": st.text(max_size=40) | json_values,
        "all": json_values,
        "ids": st.lists(st.integers() | st.text(max_size=3), max_size=3) | json_values,
        "route": st.sampled_from(ROUTES) | json_values,
        "since": json_values,
    },
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str]]:
    template = draw(st.sampled_from(PATHS))
    path = template.format(
        route=draw(st.sampled_from(ROUTES)),
        id=draw(st.sampled_from(["1", "0", "-1", "x", "99999999999999999999999", "1.5"])),
    )
    if template == "/v1/audit":
        path += draw(st.sampled_from(["", "?since=1h", "?since=yesterday", "?route=rotate", "?since=-5m"]))
    if template == "/v1/dlq":
        path += draw(
            st.sampled_from(["", "?ids=1,x", "?ids=99999999999999999999", "?limit=0", "?since=1e400"])
        )
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    body = draw(
        st.one_of(
            fields.map(lambda value: json.dumps(value).encode()),
            json_values.map(lambda value: json.dumps(value).encode()),
            st.binary(max_size=64),
        )
    )
    token = draw(st.sampled_from([TOKEN, TOKEN, TOKEN, "wrong", ""]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain"]))}
    if token:
        headers["Authorization"] = draw(st.sampled_from(["Bearer ", "bearer ", "Basic "])) + token
    return method, path, body, headers


@contextmanager
def daemon_in_thread(tmp_path: Path, monkeypatch: Any) -> Iterator[tuple[app.Daemon, int]]:
    """The real daemon with its admin API, on its own event loop in a thread."""
    monkeypatch.setenv("GLUE_TEST_FUZZ_TOKEN", TOKEN)
    config = support.daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        admin={"host": "127.0.0.1", "port": 0, "tokens": {"fuzz": {"env": "GLUE_TEST_FUZZ_TOKEN"}}},
        routes=[
            {"name": "rotate", "handler": "log", "params": {"message": "rotate"}, "approval": {}},
            {"name": "restart", "handler": "log", "params": {"message": "restart"}},
        ],
    )
    app.load_plugins(config)
    daemon = app.Daemon(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(daemon.start(), loop).result(30)
    try:
        assert daemon.pipeline is not None
        [api] = [w for w in daemon.pipeline.workers if w.name == "admin-api"]
        yield daemon, api.port  # type: ignore[attr-defined]
    finally:
        asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_any_admin_request_gets_a_2xx_or_a_4xx_with_a_reason(tmp_path: Path, monkeypatch: Any) -> None:
    with daemon_in_thread(tmp_path, monkeypatch) as (_, port):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        seen: set[int] = set()

        @hypothesis.settings(max_examples=300, deadline=None, database=None)
        @hypothesis.given(requests())
        def check(request: tuple[str, str, bytes, dict[str, str]]) -> None:
            method, path, body, headers = request
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read()
            seen.add(response.status)
            assert response.status < 500, (method, path, body, response.status, text)
            if response.status >= 400:
                assert json.loads(text)["error"], "a 4xx says why"
            scheme, _, given = headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or given != TOKEN:  # the scheme is case-insensitive (RFC 9110)
                assert response.status in (401, 404, 405), (method, path, response.status)
            assert TOKEN.encode() not in text

        check()
        connection.close()
    assert 401 in seen and any(200 <= status < 300 for status in seen)
