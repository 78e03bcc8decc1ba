"""The object store wrapper against moto's standalone S3 server (real HTTP on loopback): object info and
user metadata, tags, the bounded read, credentials read from files and rotated, and errors that name the
object without leaking a credential."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from glue import objectstore
from glue import settings as settings_mod
from tests.minio_access import UNREACHABLE, connection


async def test_stat_returns_size_type_and_user_metadata(
    store: objectstore.ObjectStore, s3: Any, bucket: str
) -> None:
    s3.put_object(
        Bucket=bucket,
        Key="models/llama 3/weights.bin",
        Body=b"x" * 1234,
        ContentType="application/octet-stream",
        Metadata={"Model": "llama-3", "stage": "prod"},
    )
    info = await store.stat(bucket, "models/llama 3/weights.bin")
    assert info.size == 1234
    assert info.content_type == "application/octet-stream"
    assert info.metadata == {"model": "llama-3", "stage": "prod"}
    assert info.etag


async def test_tags_of_an_object(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a.json", Body=b"{}", Tagging="team=ml&stage=canary")
    assert await store.tags(bucket, "a.json") == {"team": "ml", "stage": "canary"}


async def test_read_within_and_over_the_bound(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="manifest.json", Body=b'{"name": "m"}')
    assert await store.read(bucket, "manifest.json", max_bytes=13) == b'{"name": "m"}'
    with pytest.raises(
        objectstore.ObjectTooLarge, match=r"s3://.*/manifest.json: 13 bytes, over the bound of 12"
    ):
        await store.read(bucket, "manifest.json", max_bytes=12)


async def test_empty_object_reads_as_empty(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert await store.read(bucket, "empty", max_bytes=10) == b""


async def test_missing_object_is_not_found_with_its_name(store: objectstore.ObjectStore, bucket: str) -> None:
    with pytest.raises(objectstore.ObjectNotFound, match=rf"s3://{bucket}/nope: NoSuchKey"):
        await store.stat(bucket, "nope")
    with pytest.raises(objectstore.ObjectNotFound, match="NoSuchKey"):
        await store.read(bucket, "nope", max_bytes=10)


async def test_put_and_list(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    await store.put(bucket, "p/b.jsonl", b"2\n")
    await store.put(bucket, "p/a.jsonl", b"1\n")
    await store.put(bucket, "q/c.jsonl", b"3\n")
    assert await store.list_keys(bucket, "p/") == ["p/a.jsonl", "p/b.jsonl"]
    assert s3.get_object(Bucket=bucket, Key="p/a.jsonl")["Body"].read() == b"1\n"


async def test_unreachable_server_is_a_clear_error(credential_files: dict[str, Path]) -> None:
    config = settings_mod.Minio.model_validate(connection(UNREACHABLE, credential_files, timeout=1))
    store = objectstore.ObjectStore(config)
    try:
        with pytest.raises(objectstore.ObjectStoreError, match=r"s3://b-x/k: unreachable") as caught:
            await store.stat("b-x", "k")
    finally:
        store.close()
    secret = credential_files["secret"].read_text().strip()
    assert secret not in str(caught.value)


async def test_missing_credential_file_fails_at_load_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(settings_mod.ConfigError) as caught:
        settings_mod.from_mapping(
            {
                "sources": {
                    "minio": {
                        "endpoint": "minio:9000",
                        "accessKey": {"file": str(tmp_path / "missing")},
                        "secretKey": {"env": "GLUE_TEST_MINIO_SECRET_UNSET"},
                    }
                }
            },
            "glue.yaml",
        )
    text = str(caught.value)
    assert "glue.yaml: sources.minio.accessKey: cannot read secret file" in text
    assert "sources.minio.secretKey: environment variable GLUE_TEST_MINIO_SECRET_UNSET is not set" in text


def test_listen_request_is_signed_and_keeps_the_filter(minio_config: settings_mod.Minio) -> None:
    store = objectstore.ObjectStore(minio_config)
    try:
        url, headers = store.listen_request(
            "models", prefix="llm/", suffix=".safetensors", events=["s3:ObjectCreated:*"], ping=5
        )
    finally:
        store.close()
    assert url.startswith(f"http://{minio_config.endpoint}/models?")
    assert "events=s3%3AObjectCreated%3A%2A" in url and "prefix=llm%2F" in url and "ping=5" in url
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=glue-access/")
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date" in headers["Authorization"]


async def test_credentials_follow_a_rotated_file(
    minio_config: settings_mod.Minio, credential_files: dict[str, Path]
) -> None:
    store = objectstore.ObjectStore(minio_config, secret_refresh=0.0)
    try:
        _, before = store.listen_request("b-x", prefix="", suffix="", events=["s3:ObjectCreated:*"], ping=5)
        credential_files["access"].write_text("rotated-access\n")
        await asyncio.sleep(0.01)
        _, after = store.listen_request("b-x", prefix="", suffix="", events=["s3:ObjectCreated:*"], ping=5)
    finally:
        store.close()
    assert "Credential=glue-access/" in before["Authorization"]
    assert "Credential=rotated-access/" in after["Authorization"]
