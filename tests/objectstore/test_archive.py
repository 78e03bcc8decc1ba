"""Recordings and dead letters in a bucket (moto's S3 server): JSON lines partitioned by date, read back
in order and replayed through the same decoder; a failed write keeps its lines; the buffer is bounded."""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from glue import app, events, formats, objectstore
from glue import settings as settings_mod
from tests.sources.minio_listen.listen_double import record
from tests.support import base_url, daemon_settings, eventually, metric, running

DAY1 = datetime.datetime(2026, 11, 27, 23, 59, 30, tzinfo=datetime.UTC).timestamp()
DAY2 = datetime.datetime(2026, 11, 28, 0, 0, 5, tzinfo=datetime.UTC).timestamp()


def _archive(bucket: str, **extra: object) -> settings_mod.Archive:
    return settings_mod.Archive.model_validate(
        {"bucket": bucket, "prefix": "glue/prod", "recordings": True, "deadLetters": True, **extra}
    )


def _delivery(bucket: str, key: str, at: float) -> events.Delivery:
    body = orjson.dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{bucket}/{key}",
            "Records": [record(bucket, key, escaped=True)],
        }
    )
    return events.Delivery(
        "http", "minio", "minio", {"content-type": "application/json"}, body, received_at=at
    )


async def test_round_trip_partitioned_by_date(store: objectstore.ObjectStore, s3: Any, bucket: str) -> None:
    clock = [DAY2]
    writer = objectstore.ArchiveWriter(store, _archive(bucket), clock=lambda: clock[0], writer_id="w1")
    first, second = _delivery(bucket, "models/a b.bin", DAY1), _delivery(bucket, "models/c.bin", DAY2)
    writer.record(first)
    writer.record(second)
    writer.dead_letter({"route": "reload", "error": "HTTP 500", "eventId": "abc"})
    assert await writer.flush() == 3
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [
        "glue/prod/dead-letters/date=2026-11-28/000005-w1-000003.jsonl",
        "glue/prod/recordings/date=2026-11-27/000005-w1-000001.jsonl",
        "glue/prod/recordings/date=2026-11-28/000005-w1-000002.jsonl",
    ]
    assert writer.buffered_bytes == 0

    lines = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/glue/prod/recordings")]
    replayed = [events.Delivery.from_record(line) for line in lines]
    assert [d.body for d in replayed] == [first.body, second.body]
    original = [formats.decode(first)[0], formats.decode(second)[0]]
    decoded = [formats.decode(d)[0] for d in replayed]
    assert [events.identity(e) for e in decoded] == [events.identity(e) for e in original]
    assert decoded[0].get_subject() == "models/a b.bin"

    since = [
        line
        async for line in objectstore.read_archive(
            store, f"s3://{bucket}/glue/prod/recordings", since=datetime.date(2026, 11, 28)
        )
    ]
    assert len(since) == 1
    dead = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/glue/prod/dead-letters/")]
    assert dead == [{"route": "reload", "error": "HTTP 500", "eventId": "abc"}]


async def test_objects_are_cut_at_the_size_bound(
    store: objectstore.ObjectStore, s3: Any, bucket: str
) -> None:
    writer = objectstore.ArchiveWriter(store, _archive(bucket, maxObjectBytes=2048), clock=lambda: DAY1)
    for index in range(10):
        writer.record(_delivery(bucket, f"k{index}", DAY1))
    assert await writer.flush() > 1
    for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        assert len(body) <= 2048 or body.count(b"\n") == 1  # a line over the bound goes alone
    back = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/glue")]
    assert [orjson.loads(line["body"])["Key"] for line in back] == [f"{bucket}/k{i}" for i in range(10)]


async def test_failed_write_keeps_lines_until_the_bucket_answers(
    store: objectstore.ObjectStore, s3: Any
) -> None:
    missing = "glue-" + secrets.token_hex(6)
    writer = objectstore.ArchiveWriter(store, _archive(missing), clock=lambda: DAY1)
    writer.dead_letter({"route": "r", "error": "boom"})
    before = metric("glue_archive_write_errors_total", kind="dead-letters")
    assert await writer.flush() == 0
    assert metric("glue_archive_write_errors_total", kind="dead-letters") == before + 1
    assert writer.buffered_bytes > 0
    s3.create_bucket(Bucket=missing)
    assert await writer.flush() == 1
    assert writer.buffered_bytes == 0
    assert [line async for line in objectstore.read_archive(store, f"s3://{missing}/")] == [
        {"route": "r", "error": "boom"}
    ]


async def test_buffer_bound_drops_the_oldest_lines(store: objectstore.ObjectStore, bucket: str) -> None:
    writer = objectstore.ArchiveWriter(store, _archive(bucket, maxBufferBytes=1024), clock=lambda: DAY1)
    before = metric("glue_archive_dropped_lines_total", kind="dead-letters")
    for index in range(40):
        writer.dead_letter({"n": index, "pad": "x" * 40})
    assert writer.buffered_bytes <= 1024
    await writer.flush()
    kept = [line["n"] async for line in objectstore.read_archive(store, f"s3://{bucket}/")]
    dropped = metric("glue_archive_dropped_lines_total", kind="dead-letters") - before
    assert dropped == 40 - len(kept) > 0
    assert kept == list(range(40 - len(kept), 40))


async def test_an_unwritable_bucket_buffers_within_the_bound_and_says_so(
    store: objectstore.ObjectStore, s3: Any
) -> None:
    """The bucket refuses writes (here: it is missing) while dead letters keep coming: the buffer stays
    within maxBufferBytes, the gauge shows it, one warning names the bound, and once the bucket takes
    writes the newest lines are written and the log says how many were dropped."""
    missing = "glue-" + secrets.token_hex(6)
    writer = objectstore.ArchiveWriter(store, _archive(missing, maxBufferBytes=2048), clock=lambda: DAY1)
    with capture_logs() as logs:
        for index in range(60):
            writer.dead_letter({"n": index, "pad": "x" * 40})
            if index % 10 == 0:
                assert await writer.flush() == 0
            assert writer.buffered_bytes <= 2048
            assert metric("glue_archive_buffered_bytes") == writer.buffered_bytes
        s3.create_bucket(Bucket=missing)
        assert await writer.flush() == 1
    assert metric("glue_archive_buffered_bytes") == writer.buffered_bytes == 0
    full = [line for line in logs if line["event"] == "archive buffer full, dropping the oldest lines"]
    assert [(line["bound"], line["log_level"]) for line in full] == [(2048, "warning")]
    failed = [line for line in logs if line["event"] == "archive write failed, lines kept"]
    assert len(failed) == 6 and all(line["bound"] == 2048 for line in failed)
    kept = [line["n"] async for line in objectstore.read_archive(store, f"s3://{missing}/")]
    (again,) = [line for line in logs if line["event"] == "archive written again"]
    assert again["dropped"] == 60 - len(kept) > 0
    assert kept == list(range(60 - len(kept), 60))


async def test_stop_flushes_what_is_buffered(store: objectstore.ObjectStore, bucket: str) -> None:
    writer = objectstore.ArchiveWriter(store, _archive(bucket, flushSeconds=3600), clock=lambda: DAY1)
    await writer.start()
    writer.record(_delivery(bucket, "k", DAY1))
    await writer.stop()
    assert len([line async for line in objectstore.read_archive(store, f"s3://{bucket}/glue/prod")]) == 1


async def test_bad_archive_url_and_bad_line_are_clear_errors(
    store: objectstore.ObjectStore, s3: Any, bucket: str
) -> None:
    with pytest.raises(objectstore.ObjectStoreError, match="is not an s3://bucket/prefix URL"):
        [line async for line in objectstore.read_archive(store, "https://example.com/x")]
    s3.put_object(Bucket=bucket, Key="glue/recordings/date=2026-11-27/x.jsonl", Body=b'{"a": 1}\nnot json\n')
    with pytest.raises(
        objectstore.ObjectStoreError,
        match=rf"s3://{bucket}/glue/recordings/date=2026-11-27/x.jsonl line 2: not JSON",
    ):
        [line async for line in objectstore.read_archive(store, f"s3://{bucket}/glue")]


async def test_read_deliveries_for_replay(store: objectstore.ObjectStore, bucket: str) -> None:
    writer = objectstore.ArchiveWriter(store, _archive(bucket), clock=lambda: DAY1)
    sent = _delivery(bucket, "models/x.bin", DAY1)
    writer.record(sent)
    writer.dead_letter({"route": "r"})
    await writer.flush()
    got = [d async for d in objectstore.read_deliveries(store, f"s3://{bucket}/glue/prod/recordings")]
    assert got == [sent]
    with pytest.raises(objectstore.ObjectStoreError, match="record 1 is not a recorded delivery"):
        [d async for d in objectstore.read_deliveries(store, f"s3://{bucket}/glue/prod/dead-letters")]


async def test_daemon_runs_the_archive_and_flushes_it_on_drain(
    minio_config: settings_mod.Minio, bucket: str, tmp_path: Path
) -> None:
    config = daemon_settings(
        tmp_path,
        sources={"minio": minio_config.model_dump(by_alias=True, exclude_none=True, mode="json")},
        archive={"bucket": bucket, "prefix": "ops", "deadLetters": True, "flushSeconds": 3600},
    )
    async with running(config) as daemon:
        assert daemon.pipeline is not None and daemon.pipeline.archive is not None
        daemon.pipeline.archive.dead_letter({"route": "reload", "error": "gave up"})
    store = objectstore.ObjectStore(minio_config)
    try:
        lines = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/ops/dead-letters")]
    finally:
        store.close()
    assert lines == [{"route": "reload", "error": "gave up"}]


async def test_daemon_archives_what_arrives_and_what_dead_letters(
    minio_config: settings_mod.Minio, bucket: str, tmp_path: Path
) -> None:
    """A delivery is recorded in the bucket as it arrives; the invocation its route dead-letters (the
    receiver answers 400: permanent) is archived too; both are flushed on drain."""
    refused = web.Application()

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=400, text="no")

    refused.router.add_post("/hook", refuse)
    runner = web.AppRunner(refused)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    config = daemon_settings(
        tmp_path,
        execution={"pollSeconds": 0.05},
        endpoints=[{"name": "minio", "path": "/minio", "format": "minio"}],
        sources={"minio": minio_config.model_dump(by_alias=True, exclude_none=True, mode="json")},
        archive={"bucket": bucket, "prefix": "ops", "recordings": True, "flushSeconds": 3600},
        routes=[{"name": "notify", "handler": "http", "params": {"url": f"http://127.0.0.1:{port}/hook"}}],
    )
    app.load_plugins(config)
    sent = _delivery(bucket, "models/z.bin", DAY1)
    before = metric("glue_dead_lettered_total", route="notify")
    try:
        async with running(config) as daemon:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    base_url(daemon) + "/minio",
                    data=sent.body,
                    headers={"Content-Type": "application/json"},
                ) as response,
            ):
                assert response.status == 202

            await eventually(lambda: metric("glue_dead_lettered_total", route="notify") > before)
    finally:
        await runner.cleanup()
    store = objectstore.ObjectStore(minio_config)
    try:
        recorded = [d async for d in objectstore.read_deliveries(store, f"s3://{bucket}/ops/recordings")]
        letters = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/ops/dead-letters")]
    finally:
        store.close()
    assert [d.body for d in recorded] == [sent.body]
    assert len(letters) == 1
    assert letters[0]["route"] == "notify" and letters[0]["handler"] == "http"
    assert "HTTP 400" in letters[0]["error"]
