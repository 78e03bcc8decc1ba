"""What several test areas share: a real daemon on a loopback port, polling, metric values."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import prometheus_client
from cloudevents.core.v1.event import CloudEvent

import glue
from glue import app, events, settings


class Counting:
    """A registry whose one handler, ``test.count``, records the id of every event it handles (a dry
    run only plans): what the fault tests compare with what was acknowledged."""

    def __init__(self) -> None:
        self.registry = glue.Registry()
        self.handled: list[str] = []

        @glue.handler("test.count", registry=self.registry)
        async def count(*, event: events.CloudEvent, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
            """Counts the events it is called with."""
            if ctx.dry_run:
                return glue.Plan(summary="count")
            self.handled.append(event.get_id())
            return None


def daemon_settings(tmp_path: Path, **groups: Any) -> settings.Settings:
    """A daemon on a free loopback port with its SQLite journal in ``tmp_path``, plus ``groups``."""
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "journal": {"path": str(tmp_path / "journal.db")},
        **groups,
    }
    return settings.from_mapping(config, "test")


@contextlib.asynccontextmanager
async def running(loaded: settings.Settings) -> AsyncIterator[app.Daemon]:
    """The daemon started on ``loaded``, and drained when the block ends."""
    daemon = app.Daemon(loaded)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def base_url(daemon: app.Daemon) -> str:
    """Where the daemon's HTTP intake listens."""
    assert daemon.pipeline is not None and daemon.pipeline.http.port is not None
    return f"http://127.0.0.1:{daemon.pipeline.http.port}"


def admin_url(daemon: app.Daemon) -> str:
    """Where the daemon's admin API listens."""
    assert daemon.pipeline is not None
    [api] = [w for w in daemon.pipeline.workers if w.name == "admin-api"]
    return f"http://127.0.0.1:{api.port}"  # type: ignore[attr-defined]


class Client:
    """A running daemon and an HTTP session to talk to its intake; areas add the requests they send."""

    def __init__(self, daemon: app.Daemon, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session
        self.base = base_url(daemon)


async def eventually(check: Callable[[], Awaitable[Any] | Any], within: float = 10.0) -> Any:
    """Poll ``check`` (plain or async) until it returns something true, and return that; fail after
    ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"condition not met within {within:g} s") from None


def json_data(event: events.CloudEvent) -> dict[str, Any]:
    """The data of an event whose payload is a JSON object (the SDK types it as any payload)."""
    return cast(dict[str, Any], event.get_data())


def metric(name: str, **labels: str) -> float:
    """The current value of a sample in the default Prometheus registry (0 when it has none yet)."""
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def cloudevent(
    id: str, *, type: str = "com.example.test", source: str = "/test", data: Any = None, **extra: Any
) -> CloudEvent:
    """A CloudEvent for a test: JSON data (when given) unless ``extra`` names another content type."""
    attributes: dict[str, Any] = {"id": id, "source": source, "type": type, "specversion": "1.0", **extra}
    if data is not None:
        attributes.setdefault("datacontenttype", "application/json")
    return CloudEvent(attributes, data)


async def spawn_glue(config: Path, log: Path) -> asyncio.subprocess.Process:
    """``glue run --config config`` as a child process of this environment, its output appended to ``log``."""
    glue = Path(sys.executable).with_name("glue")
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            str(glue), "run", "--config", str(config), stdout=out, stderr=out
        )


async def scrape(port: int) -> dict[str, float]:
    """A daemon's /metrics as {sample line name+labels: value}."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
