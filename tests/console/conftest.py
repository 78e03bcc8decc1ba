"""The console's tests: a real daemon with the admin listener, and Debian's chromium driven by
Playwright (the system's browser by its path: nothing is downloaded). Screenshots of each page go
to .artifacts/console/ (gitignored), to look at."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import BrowserContext, async_playwright

from glue import app, settings
from tests.support import base_url, daemon_settings

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "console"
OPS, VIEWER = "ops-token-for-console-tests", "viewer-token-for-console-tests"
_ARGS = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]


def console_settings(
    tmp_path: Path, *, lockout: dict[str, Any] | None = None, oidc: dict[str, Any] | None = None
) -> settings.Settings:
    """A daemon with named tokens (ops acts, oncall reads) and routes to explain, retry and approve;
    ``lockout``: the listener's lockout settings (default: the defaults); ``oidc``: single sign-on."""
    loaded = daemon_settings(
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "lockout": lockout or {}},
        execution={"pollSeconds": 0.05},
        plugins=["tests.console.gated_plugin"],
        admin={
            "port": 0,
            "tokens": {"ops": {"value": OPS}, "oncall": {"value": VIEWER}},
            "viewers": ["oncall"],
            **({"oidc": oidc} if oidc is not None else {}),
        },
        endpoints=[
            {"name": "ce", "path": "/events", "format": "cloudevents"},
            {"name": "gitlab", "path": "/gitlab", "format": "gitlab"},
        ],
        routes=[
            {
                "name": "deploy-main",
                "match": 'type == "gitlab.push" && data.ref == "refs/heads/main"',
                "handler": "log",
                "params": {"message": "deploy {{ data.after }}"},
            },
            {
                "name": "rotate",
                "match": 'type == "rotate"',
                "handler": "log",
                "params": {"message": "rotate {{ id }}"},
                "approval": {},
            },
            {
                "name": "gated",
                "match": 'type == "gated"',
                "handler": "test.gated",
                "params": {"gate": str(tmp_path / "gate")},
            },
        ],
    )
    app.load_plugins(loaded)
    return loaded


async def post_event(daemon: app.Daemon, type_: str, id_: str, data: Any) -> None:
    """Post a CloudEvent to the daemon's webhook port; it is acknowledged (202)."""
    headers = {"ce-specversion": "1.0", "ce-id": id_, "ce-source": "/tests", "ce-type": type_}
    headers["content-type"] = "application/json"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url(daemon)}/events", data=orjson.dumps(data), headers=headers) as response,
    ):
        assert response.status == 202


def admin_url(daemon: app.Daemon) -> str:
    assert daemon.pipeline is not None
    [api] = [w for w in daemon.pipeline.workers if w.name == "admin-api"]
    return f"http://127.0.0.1:{api.port}"  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make services` installs it (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(tmp_path: Path, chromium: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=chromium, headless=True, args=_ARGS
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go, emptied once per run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS
