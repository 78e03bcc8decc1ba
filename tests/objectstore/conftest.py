"""Fixtures of the object store tests: moto's standalone S3 server on a free loopback port, a settings
group pointing at it with credentials read from files (tests/minio_access.py), and a bucket per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from glue import objectstore
from glue import settings as settings_mod
from tests import minio_access

credential_files = minio_access.credential_files


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def minio_config(moto_endpoint: str, credential_files: dict[str, Path]) -> settings_mod.Minio:
    return settings_mod.Minio.model_validate(
        minio_access.connection(moto_endpoint, credential_files, timeout=5)
    )


@pytest.fixture
def s3(moto_endpoint: str) -> Any:  # boto3 builds its clients at run time: no static type here
    """A boto3 client on the same server: an independent view to check what glue wrote."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://{moto_endpoint}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "glue-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def store(minio_config: settings_mod.Minio) -> AsyncIterator[objectstore.ObjectStore]:
    client = objectstore.ObjectStore(minio_config)
    try:
        yield client
    finally:
        client.close()
