"""Fixtures of the single sign-on tests: the local issuer of tests/oidc_issuer.py, running."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.oidc_issuer import Issuer


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    started = Issuer()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()
