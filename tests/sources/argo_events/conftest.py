"""Fixtures for the EventBus source: a JetStream server per test (plain, or TLS with basic auth)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sources.argo_events import bus


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[bus.Server]:
    started = bus.start_server(tmp_path)
    yield started
    bus.stop_server(started)
