"""Credential guessing over real sockets: repeated 401s from one address are answered 429 for a while,
while other senders go on as before. Two senders are two loopback source addresses (127.0.0.1 and
127.0.0.2, both on Linux's loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from glue import listener, settings
from tests import support
from tests.sources.http.conftest import Running, StartDaemon

BODY = b'{"name": "model-a"}'


def cloudevent() -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": str(uuid.uuid4()),
        "ce-source": "/lockout",
        "ce-type": "com.example.lockout",
        "content-type": "application/json",
    }


def config(**server: Any) -> dict[str, Any]:
    auth = {"type": "gitlab-token", "secret": {"value": "right"}}
    return {
        "endpoints": [
            {"name": "hooks", "path": "/hooks", "format": "cloudevents", "auth": auth},
            {"name": "open", "path": "/open", "format": "cloudevents"},
        ],
        "server": {"host": "127.0.0.1", "port": 0, **server},
    }


@contextlib.asynccontextmanager
async def sender(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def post(
    glue: Running, session: aiohttp.ClientSession, token: str, extra: dict[str, str] | None = None
) -> tuple[int, str | None, float]:
    started = time.perf_counter()
    headers = {**cloudevent(), "X-Gitlab-Token": token, **(extra or {})}
    async with session.post(glue.base + "/hooks", data=BODY, headers=headers) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After"), time.perf_counter() - started


async def test_repeated_401s_lock_one_address_out_and_no_other(start_daemon: StartDaemon) -> None:
    glue = await start_daemon(config(lockout={"failures": 5, "windowSeconds": 60, "seconds": 1.5}))
    before = support.metric("glue_auth_lockouts_total", endpoint="hooks")
    async with sender("127.0.0.1") as guesser, sender("127.0.0.2") as honest:
        with capture_logs() as logs:
            answers = [await post(glue, guesser, f"guess-{n}") for n in range(5)]
            assert [status for status, _, _ in answers] == [401] * 5
            locked = [await post(glue, guesser, "right") for _ in range(20)]  # even the right token
            # Another address meanwhile: answered as before, as fast as before.
            other = [await post(glue, honest, "right") for _ in range(5)]
        assert {status for status, _, _ in locked} == {429}
        assert locked[0][1] == "2" and {retry for _, retry, _ in locked} <= {"1", "2"}  # whole seconds, up
        assert [status for status, _, _ in other] == [202] * 5
        assert max(seconds for _, _, seconds in other) < 1
        lines = [line for line in logs if line["event"] == "address locked out after repeated 401s"]
        assert len(lines) == 1  # once per lockout, not once per refused request
        assert lines[0]["remote"] == "127.0.0.1" and lines[0]["failures"] == 5
        assert support.metric("glue_auth_lockouts_total", endpoint="hooks") == before + 1
        assert support.metric("glue_deliveries_total", endpoint="hooks", outcome="locked_out") >= 20
        # An endpoint without credentials has nothing to guess: it is not locked.
        async with guesser.post(glue.base + "/open", data=BODY, headers=cloudevent()) as response:
            assert response.status == 202
        await asyncio.sleep(1.6)  # the lockout ends by itself
        assert (await post(glue, guesser, "right"))[0] == 202


async def test_behind_a_trusted_proxy_the_forwarded_address_is_locked_out(start_daemon: StartDaemon) -> None:
    glue = await start_daemon(config(lockout={"failures": 3, "seconds": 60}, trustedProxies=["127.0.0.0/8"]))
    async with sender("127.0.0.1") as proxy:
        guesser = {"X-Forwarded-For": "203.0.113.7"}
        for n in range(3):
            assert (await post(glue, proxy, f"guess-{n}", guesser))[0] == 401
        assert (await post(glue, proxy, "right", guesser))[0] == 429
        # The proxy's other clients, and a forged left-most entry, are not the guesser.
        assert (await post(glue, proxy, "right", {"X-Forwarded-For": "198.51.100.9"}))[0] == 202
        forged = {"X-Forwarded-For": "203.0.113.7, 198.51.100.10"}
        assert (await post(glue, proxy, "right", forged))[0] == 202


async def test_without_trusted_proxies_forwarded_for_is_ignored(start_daemon: StartDaemon) -> None:
    glue = await start_daemon(config(lockout={"failures": 2, "seconds": 60}))
    async with sender("127.0.0.1") as peer:
        for n, forwarded in enumerate(["203.0.113.1", "203.0.113.2"]):
            assert (await post(glue, peer, f"guess-{n}", {"X-Forwarded-For": forwarded}))[0] == 401
        assert (await post(glue, peer, "right", {"X-Forwarded-For": "203.0.113.3"}))[0] == 429


def test_client_address_takes_the_right_most_untrusted_hop() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert listener.client_address("10.1.1.1", "1.2.3.4, 5.6.7.8, 10.2.2.2", proxies) == "5.6.7.8"
    assert listener.client_address("192.0.2.1", "1.2.3.4", proxies) == "192.0.2.1"  # peer not trusted
    assert listener.client_address("10.1.1.1", None, proxies) == "10.1.1.1"
    assert listener.client_address("10.1.1.1", "garbage, 10.3.3.3", proxies) == "garbage"


def test_ended_lockouts_leave_the_table() -> None:
    lockout = listener.Lockout(settings.Lockout(failures=1, seconds=0.05))
    for n in range(100):
        lockout.failed(f"192.0.2.{n}", "hooks")
    assert lockout.active and lockout.retry_after("192.0.2.1") is not None
    time.sleep(0.06)
    assert lockout.retry_after("198.51.100.1") is None  # another sender's check clears what has ended
    assert not lockout.active
