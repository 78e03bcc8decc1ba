"""What an operator sees of the intake on the first day: a 401 is logged with who sent it, and no
answer names the server's software versions."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tests.sources.http.conftest import StartDaemon
from tests.sources.http.test_http import cloudevent, endpoint


async def test_a_401_line_names_the_remote_address(start_daemon: StartDaemon) -> None:
    glue = await start_daemon({"endpoints": [endpoint({"type": "bearer", "secret": {"value": "tok"}})]})
    body, headers = cloudevent()
    with capture_logs() as logs:
        status, _ = await glue.post(
            "/events", body, {**headers, "Authorization": "Bearer wrong", "X-Forwarded-For": "203.0.113.9"}
        )
    assert status == 401
    [line] = [e for e in logs if e["event"] == "delivery"]
    assert (line["outcome"], line["remote"], line["forwarded_for"]) == (
        "unauthorized",
        "127.0.0.1",
        "203.0.113.9",
    )
    assert line["reason"] == "missing or wrong credentials"
    assert "Bearer wrong" not in repr(logs)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/events"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/nope")],
)
async def test_no_answer_names_the_server_software(start_daemon: StartDaemon, method: str, path: str) -> None:
    glue = await start_daemon({"endpoints": [endpoint()]})
    body, headers = cloudevent()
    async with glue.session.request(method, glue.base + path, data=body, headers=headers) as response:
        server = response.headers.get("Server", "")
    assert "aiohttp" not in server and "Python" not in server
    assert server == "runtime-glue"
