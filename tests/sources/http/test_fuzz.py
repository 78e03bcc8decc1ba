"""Property-based fuzzing of every endpoint over a real socket.

Whatever bytes and content type a sender posts, the daemon answers with a status from the documented
set, never a 500, and journals exactly the events it answered 2xx for: a 4xx leaves nothing behind.
Inputs are arbitrary bytes, arbitrary JSON, and valid payloads of each format (tests/formats/payloads)
with bytes flipped, cut or inserted.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hypothesis
from hypothesis import strategies as st

from glue import app
from tests import support
from tests.formats import payloads

ENDPOINTS = {
    "harbor": {"format": "harbor"},
    "gitlab": {"format": "gitlab"},
    "minio": {"format": "minio"},
    "argo": {"format": "argo", "type": "org.example.sensor", "source": "argo/sensor"},
    "events": {"format": "cloudevents"},
}
VALID = {
    "harbor": payloads.body(payloads.harbor_default()),
    "gitlab": payloads.body(payloads.gitlab_push()),
    "minio": payloads.body(payloads.minio_envelope(payloads.minio_record())),
    "argo": payloads.body({"model": "llama", "replicas": 2}),
    "events": payloads.body(payloads.ce_structured()),
}
CONTENT_TYPES = [
    None,
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/json; charset=latin-1",
    "application/octet-stream",
]
ANSWERS = {200, 202, 400, 413, 415}
MAX_BODY = 4096

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, endpoint: str) -> bytes:
    data = bytearray(VALID[endpoint])
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    endpoint = draw(st.sampled_from(sorted(ENDPOINTS)))
    body = draw(
        st.one_of(
            st.binary(max_size=256),
            json_values.map(lambda value: json.dumps(value).encode()),
            mutated(endpoint),
            st.just(b"x" * (MAX_BODY + 1)),
        )
    )
    return endpoint, body, draw(st.sampled_from(CONTENT_TYPES))


@contextmanager
def daemon_in_thread(tmp_path: Path) -> Iterator[tuple[app.Daemon, int, asyncio.AbstractEventLoop]]:
    """The real daemon on its own event loop in a thread, so a synchronous property can call it."""
    config = support.daemon_settings(
        tmp_path,
        execution={"enabled": False},
        endpoints=[
            {"name": name, "path": f"/{name}", "maxBodyBytes": MAX_BODY, **options}
            for name, options in ENDPOINTS.items()
        ],
    )
    daemon = app.Daemon(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(daemon.start(), loop).result(30)
    try:
        assert daemon.pipeline is not None and daemon.pipeline.http.port is not None
        yield daemon, daemon.pipeline.http.port, loop
    finally:
        asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_any_delivery_gets_a_documented_answer_and_only_2xx_are_journaled(tmp_path: Path) -> None:
    answered: set[str] = set()
    with daemon_in_thread(tmp_path) as (daemon, port, loop):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        @hypothesis.settings(max_examples=300, deadline=None, database=None)
        @hypothesis.given(deliveries())
        def check(delivery: tuple[str, bytes, str | None]) -> None:
            endpoint, body, content_type = delivery
            headers = {"Content-Type": content_type} if content_type else {}
            connection.request("POST", f"/{endpoint}", body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status in ANSWERS, (response.status, payload)
            if response.status < 300:
                answered.update(payload["ids"])
            else:
                assert payload["error"], "a 4xx says why"

        check()
        connection.close()
        stored = asyncio.run_coroutine_threadsafe(daemon.journal.list(limit=100_000), loop).result(30)
    assert {row.id for row in stored} == answered
