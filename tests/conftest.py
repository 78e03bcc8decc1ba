"""Suite-wide fixtures."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.oidc_issuer import Issuer


@pytest.fixture(autouse=True)
def _loop_for_sync_tests(
    request: pytest.FixtureRequest, event_loop_policy: asyncio.AbstractEventLoopPolicy
) -> Iterator[None]:
    """looptime asks the policy for a loop around every test; for a sync test that creates one nobody
    closes, and its ResourceWarning fails a later test. Give sync tests a loop and close it after."""
    if inspect.iscoroutinefunction(request.function):
        yield
        return
    loop = asyncio.new_event_loop()
    event_loop_policy.set_event_loop(loop)
    try:
        yield
    finally:
        event_loop_policy.set_event_loop(None)
        loop.close()


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    """The local OpenID Connect issuer of tests/oidc_issuer.py (the Keycloak stand-in), running."""
    started = Issuer()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()
