"""Fixtures of the object store tests: moto's standalone S3 server on a free loopback port, a settings
group pointing at it with credentials read from files (tests/minio_access.py), and a bucket per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
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


@pytest.fixture
async def minio_tagging(
    moto_endpoint: str, credential_files: dict[str, Path]
) -> AsyncIterator[settings_mod.Minio]:
    """Settings for moto behind a proxy that answers tagging of a delete-marker version as MinIO does:
    405 MethodNotAllowed (minio cmd/erasure-object.go: a deleted version read by id is
    errMethodNotAllowed), where moto answers 404 NoSuchVersion. Everything else goes to moto as sent."""
    upstream = f"http://{moto_endpoint}"

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
        headers["Host"] = moto_endpoint
        url = upstream + request.raw_path
        async with aiohttp.ClientSession() as session:
            if request.method == "GET" and "tagging" in request.query and "versionId" in request.query:
                async with session.head(
                    upstream
                    + str(
                        request.rel_url.with_query({k: v for k, v in request.query.items() if k != "tagging"})
                    ),
                    headers=headers,
                ) as head:
                    if head.status == 405:
                        return web.Response(
                            status=405,
                            content_type="application/xml",
                            text='<?xml version="1.0" encoding="UTF-8"?>\n'
                            "<Error><Code>MethodNotAllowed</Code>"
                            "<Message>The specified method is not allowed against this resource.</Message>"
                            f"<Key>{request.path}</Key><RequestId>17B2D3C4E5F60718</RequestId></Error>",
                        )
            async with session.request(request.method, url, headers=headers, data=body) as answer:
                return web.Response(
                    status=answer.status,
                    body=await answer.read(),
                    headers={k: v for k, v in answer.headers.items() if k.lower() not in _HOP},
                )

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(application)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield settings_mod.Minio.model_validate(
            minio_access.connection(f"127.0.0.1:{port}", credential_files, timeout=5)
        )
    finally:
        await runner.cleanup()


_HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})
