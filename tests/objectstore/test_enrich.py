"""Route enrichment against moto's S3 server: metadata, tags and a manifest next to the object are read
into the route's ``object`` variable; a missing object or manifest is a fact, not a failure; an
unreachable store or a timeout is a temporary error of the event."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

from glue import contract, enrich, events, formats, objectstore
from glue import settings as settings_mod
from tests.minio_access import UNREACHABLE, connection
from tests.sources.minio_listen.listen_double import record


def _event(bucket: str, key: str, event_name: str = "s3:ObjectCreated:Put") -> events.CloudEvent:
    """The CloudEvent glue journals for a webhook notification of this object (escaped key)."""
    body = orjson.dumps(
        {
            "EventName": event_name,
            "Key": f"{bucket}/{key}",
            "Records": [record(bucket, key, event_name=event_name, escaped=True)],
        }
    )
    delivery = events.Delivery("http", "minio", "minio", {"content-type": "application/json"}, body)
    (event,) = formats.decode(delivery)
    return event


async def test_metadata_tags_and_manifest(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket,
        Key="models/llama 3/model.safetensors",
        Body=b"w" * 100,
        Metadata={"Owner": "ml-team"},
        Tagging="stage=prod",
    )
    s3.put_object(
        Bucket=bucket,
        Key="models/llama 3/manifest.json",
        Body=b'{"name": "llama-3", "format": "safetensors"}',
    )
    spec = enrich.Spec.model_validate({"metadata": True, "tags": True, "json": "manifest.json"})
    found = await enrich.Enricher(store).variables(_event(bucket, "models/llama 3/model.safetensors"), spec)
    obj = found["object"]
    assert obj["exists"] is True and obj["size"] == 100
    assert obj["metadata"] == {"owner": "ml-team"}
    assert obj["tags"] == {"stage": "prod"}
    assert obj["json"] == {"name": "llama-3", "format": "safetensors"}


async def test_absolute_json_key_and_size_bound(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a/b/w.bin", Body=b"w")
    s3.put_object(Bucket=bucket, Key="catalog.json", Body=b'{"models": ["a"]}')
    enricher = enrich.Enricher(store)
    event = _event(bucket, "a/b/w.bin")
    found = await enricher.variables(event, enrich.Spec.model_validate({"json": "/catalog.json"}))
    assert found["object"]["json"] == {"models": ["a"]}
    small = await enricher.variables(
        event, enrich.Spec.model_validate({"json": "/catalog.json", "maxBytes": 5})
    )
    assert small["object"]["json"] is None
    assert small["object"]["jsonError"] == f"s3://{bucket}/catalog.json: 17 bytes, over the bound of 5"


async def test_deleted_object_and_missing_manifest_are_facts(
    store: objectstore.ObjectStore, bucket: str
) -> None:
    spec = enrich.Spec.model_validate({"metadata": True, "tags": True, "json": "manifest.json"})
    event = _event(bucket, "models/gone.bin", "s3:ObjectRemoved:Delete")
    obj = (await enrich.Enricher(store).variables(event, spec))["object"]
    assert obj["exists"] is False and obj["tags"] == {} and obj["json"] is None
    assert obj["key"] == "models/gone.bin" and obj["bucket"] == bucket


async def test_not_a_minio_event_gets_null(store: objectstore.ObjectStore) -> None:
    event = events.CloudEvent(
        {"id": "1", "source": "harbor", "type": "harbor.artifact.pushed", "specversion": "1.0"},
        {"repository": {}},
    )
    assert await enrich.Enricher(store).variables(event, enrich.Spec(metadata=True)) == {"object": None}


async def test_unreachable_store_is_a_temporary_error(credential_files: dict[str, Path]) -> None:
    config = settings_mod.Minio.model_validate(connection(UNREACHABLE, credential_files, timeout=1))
    store = objectstore.ObjectStore(config)
    try:
        with pytest.raises(contract.TemporaryError, match=r"s3://models/w.bin tags: unreachable"):
            await enrich.Enricher(store).variables(_event("models", "w.bin"), enrich.Spec(tags=True))
    finally:
        store.close()


async def test_a_silent_store_times_out_as_a_temporary_error(credential_files: dict[str, Path]) -> None:
    """A server that accepts the connection and never answers: the spec's timeout applies."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    config = settings_mod.Minio.model_validate(connection(f"127.0.0.1:{port}", credential_files, timeout=5))
    store = objectstore.ObjectStore(config)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(enrich.EnrichmentFailed, match=r"enrichment took longer than 0.3s"):
            await enrich.Enricher(store).variables(
                _event("models", "w.bin"), enrich.Spec(metadata=True, timeout=0.3)
            )
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        store.close()
        silent.close()


def _delete_marker(s3: Any, bucket: str, key: str) -> str:
    """Version ``key`` in a versioned bucket, then delete it: the id of the delete marker made."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key=key, Body=b"w", Tagging="stage=prod")
    made = s3.delete_object(Bucket=bucket, Key=key)
    assert made["DeleteMarker"] is True
    return str(made["VersionId"])


def _marker_event(bucket: str, key: str, version_id: str) -> events.CloudEvent:
    """MinIO's DeleteMarkerCreated record names the marker's version (cmd/object-handlers.go)."""
    rec = record(bucket, key, event_name="s3:ObjectRemoved:DeleteMarkerCreated", escaped=True)
    rec["s3"]["object"]["versionId"] = version_id
    body = orjson.dumps({"EventName": rec["eventName"], "Key": f"{bucket}/{key}", "Records": [rec]})
    (event,) = formats.decode(
        events.Delivery("http", "minio", "minio", {"content-type": "application/json"}, body)
    )
    return event


async def test_a_delete_marker_is_an_object_that_does_not_exist(
    store: objectstore.ObjectStore, s3: Any, bucket: str
) -> None:
    """HEAD of a delete-marker version: MinIO and moto both answer 405 with x-amz-delete-marker: true
    (minio cmd/erasure-object.go getObjectInfo). Tagging of it: MinIO answers 405 MethodNotAllowed,
    moto 404 NoSuchVersion (both covered: this test on moto, the next one with MinIO's answer)."""
    version = _delete_marker(s3, bucket, "models/m.bin")
    spec = enrich.Spec.model_validate({"metadata": True, "tags": True})
    obj = (await enrich.Enricher(store).variables(_marker_event(bucket, "models/m.bin", version), spec))[
        "object"
    ]
    assert obj["exists"] is False and obj["tags"] == {}
    assert obj["versionId"] == version


async def test_minios_answer_to_tagging_a_delete_marker_is_not_a_failure(
    minio_tagging: settings_mod.Minio, s3: Any, bucket: str
) -> None:
    """Tagging a delete-marker version, answered as MinIO answers it (405 MethodNotAllowed,
    cmd/object-handlers.go GetObjectTaggingHandler via GetObjectTags)."""
    version = _delete_marker(s3, bucket, "models/m.bin")
    store = objectstore.ObjectStore(minio_tagging)
    try:
        spec = enrich.Spec.model_validate({"tags": True})
        found = await enrich.Enricher(store).variables(_marker_event(bucket, "models/m.bin", version), spec)
    finally:
        store.close()
    assert found["object"]["exists"] is False and found["object"]["tags"] == {}
