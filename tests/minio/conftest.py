"""Fixtures of the MinIO tests: moto's standalone S3 server on a free loopback port, a settings group
pointing at it with credentials read from files (as a mounted Secret provides them), and a bucket per test.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from glue import intake, journal, objectstore, pipeline
from glue import settings as settings_mod
from tests.minio.listen_double import ListenDouble


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
def credential_files(tmp_path: Path) -> dict[str, Path]:
    access = tmp_path / "access-key"
    secret = tmp_path / "secret-key"
    access.write_text("glue-access\n")
    secret.write_text("glue-secret-" + secrets.token_hex(8) + "\n")
    return {"access": access, "secret": secret}


#: The discard port: nothing listens there.
UNREACHABLE = "127.0.0.1:9"


def connection(endpoint: str, files: dict[str, Path], **extra: Any) -> dict[str, Any]:
    """``sources.minio`` as an operator writes it: ``endpoint`` over plain HTTP, the credentials from the
    files of ``credential_files``, and ``extra`` settings."""
    return {
        "endpoint": endpoint,
        "secure": False,
        "accessKey": {"file": str(files["access"])},
        "secretKey": {"file": str(files["secret"])},
        **extra,
    }


@pytest.fixture
def minio_config(moto_endpoint: str, credential_files: dict[str, Path]) -> settings_mod.Minio:
    return settings_mod.Minio.model_validate(connection(moto_endpoint, credential_files, timeout=5))


@pytest.fixture
def s3(moto_endpoint: str) -> object:
    """A boto3 client on the same server: an independent view to check what glue wrote."""
    return boto3.client(
        "s3",
        endpoint_url=f"http://{moto_endpoint}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3: object) -> str:
    name = "glue-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


@pytest.fixture
async def store(minio_config: settings_mod.Minio) -> AsyncIterator[objectstore.ObjectStore]:
    client = objectstore.ObjectStore(minio_config)
    try:
        yield client
    finally:
        client.close()


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


@pytest.fixture
async def journal_(tmp_path: Path) -> AsyncIterator[journal.Journal]:
    store = journal.create(settings_mod.Journal(path=tmp_path / "journal.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def intake_(journal_: journal.Journal) -> AsyncIterator[intake.Intake]:
    accepting = pipeline.make_intake(journal_, max_backlog=10_000)
    await accepting.start()
    try:
        yield accepting
    finally:
        await accepting.stop()
