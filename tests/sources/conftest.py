"""Fixtures shared by the sources' tests: a Tansu broker (Kafka) and the ListenBucketNotification double
(MinIO), each on a free loopback port, one per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import minio_access
from tests.sources.kafka import support as kafka_support
from tests.sources.minio_listen.listen_double import ListenDouble

credential_files = minio_access.credential_files


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[kafka_support.Broker]:
    started = kafka_support.start_broker(tmp_path)
    yield started
    kafka_support.stop_broker(started)


@pytest.fixture
async def listen_double(credential_files: dict[str, Path]) -> AsyncIterator[ListenDouble]:
    double = ListenDouble(
        credential_files["access"].read_text().strip(), credential_files["secret"].read_text().strip()
    )
    await double.start()
    try:
        yield double
    finally:
        await double.stop()
