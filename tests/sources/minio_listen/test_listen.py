"""The MinIO listen source against a loopback double of ListenBucketNotification (listen_double.py
follows formats.md section 3): keep-alive lines, records journaled with their unescaped
keys, a dropped connection and a reconnect, the down state in the metric and the readiness check, a
wrong secret, and a prompt stop."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from glue import events, intake, journal
from glue import settings as settings_mod
from glue.sources import minio_listen
from tests.minio_access import connection
from tests.sources.minio_listen.listen_double import ListenDouble, record
from tests.support import eventually, metric


def _line(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"Records": list(records)})


def _config(double: ListenDouble, files: dict[str, Path], bucket: str, **extra: Any) -> settings_mod.Minio:
    buckets = [{"name": bucket, "prefix": "models/", "suffix": ".bin", "events": ["s3:ObjectCreated:*"]}]
    listen = {
        "timeout": 2,
        "pingSeconds": 1,
        "reconnectInitial": 0.02,
        "reconnectMax": 0.1,
        "buckets": buckets,
        **extra,
    }
    return settings_mod.Minio.model_validate(connection(double.endpoint, files, **listen))


@pytest.fixture
def bucket_name() -> str:
    return "models-" + secrets.token_hex(4)


async def test_records_are_journaled_and_keepalives_skipped(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    listen_double.scripts.append(
        [
            ("line", b'{"Records":null}'),
            ("line", b" "),
            ("line", _line(record(bucket_name, "models/llama 3/weights+v2.bin"))),
            ("line", b'{"Records":null}'),
            ("hold",),
        ]
    )
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name), intake_.accept, reject=journal_.reject
    )
    await source.start()
    try:
        await eventually(
            lambda: metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == 1
        )
        stored = await journal_.list()
        assert len(stored) == 1
        event = stored[0].event()
        assert event.get_subject() == "models/llama 3/weights+v2.bin"  # listen keys are not escaped
        assert event.get_type() == "minio.ObjectCreated:Put"
        delivery = await journal_.delivery(stored[0].delivery_id)
        assert delivery is not None and delivery.transport == "minio-listen"
        assert metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="keepalive") >= 3
        assert metric("glue_minio_listen_up", bucket=bucket_name) == 1
        assert await source.readiness() is None and source.health() == {bucket_name: True}
    finally:
        await source.stop()
    # the filter went to MinIO as configured, signed (the double checks the signature with botocore)
    seen = listen_double.seen[0]
    assert seen.bucket == bucket_name
    assert seen.query == {
        "events": ["s3:ObjectCreated:*"],
        "ping": ["1"],
        "prefix": ["models/"],
        "suffix": [".bin"],
    }


async def test_dropped_connection_reconnects_and_loses_nothing_it_read(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    first = record(bucket_name, "models/a.bin", sequencer="17B2D3C4E5F60701")
    second = record(bucket_name, "models/b.bin", sequencer="17B2D3C4E5F60702")
    listen_double.scripts.append(
        [("line", _line(first)), ("partial", _line(second)[:40])]  # dropped in the middle of a line
    )
    listen_double.scripts.append([("status", 503, "SlowDown")])  # MinIO busy: the stream stays down
    listen_double.scripts.append([("status", 503, "SlowDown")])
    listen_double.scripts.append([("line", _line(first)), ("line", _line(second)), ("hold",)])
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name), intake_.accept, reject=journal_.reject
    )
    reasons: list[str | None] = []

    async def watch() -> bool:
        reasons.append(await source.readiness())
        return len(await journal_.list()) == 2

    await source.start()
    try:
        await eventually(watch)
        await eventually(lambda: metric("glue_minio_listen_up", bucket=bucket_name) == 1)
    finally:
        await source.stop()
    stored = await journal_.list()
    assert sorted(str(item.event().get_subject()) for item in stored) == ["models/a.bin", "models/b.bin"]
    assert len(listen_double.seen) == 4
    assert metric("glue_minio_listen_reconnects_total", bucket=bucket_name) == 1
    # the first record came twice (before and after the drop): journaled once
    assert metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="duplicate") == 1
    assert metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="rejected") == 0
    assert any(
        reason and f"minio listen stream down: {bucket_name} (HTTP 503 SlowDown)" in reason
        for reason in reasons
    )


async def test_wrong_secret_keeps_the_stream_down_and_never_logs_it(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret-" + secrets.token_hex(8))
    files = {**credential_files, "secret": wrong}
    source = minio_listen.ListenSource(_config(listen_double, files, bucket_name), intake_.accept)
    with capture_logs() as logs:
        await source.start()
        try:
            await listen_double.wait_connections(3, refused=True)
            reason = await source.readiness()
        finally:
            await source.stop()
    assert reason is not None and "HTTP 403 SignatureDoesNotMatch" in reason
    assert metric("glue_minio_listen_up", bucket=bucket_name) == 0
    assert not source.ready
    assert any(entry.get("reason") == "HTTP 403 SignatureDoesNotMatch" for entry in logs)
    for secret in (wrong.read_text(), credential_files["secret"].read_text().strip()):
        assert secret not in repr(logs)


async def test_malformed_line_is_rejected_and_the_stream_goes_on(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    broken = record(bucket_name, "models/c.bin")
    del broken["eventName"]
    listen_double.scripts.append(
        [("line", _line(broken)), ("line", _line(record(bucket_name, "models/d.bin"))), ("hold",)]
    )
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name), intake_.accept, reject=journal_.reject
    )
    await source.start()
    try:
        await eventually(
            lambda: metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == 1
        )
    finally:
        await source.stop()
    rejected = await journal_.rejected()
    assert [item.reason for item in rejected] == ["record 0: missing 'eventName'"]
    assert [item.event().get_subject() for item in await journal_.list()] == ["models/d.bin"]


async def test_stop_is_prompt_while_streams_are_open(
    listen_double: ListenDouble, credential_files: dict[str, Path], intake_: intake.Intake, bucket_name: str
) -> None:
    config = _config(listen_double, credential_files, bucket_name, pingSeconds=30)
    listen_double.scripts.append([("line", b'{"Records":null}'), ("hold",)])  # headers out, then quiet
    source = minio_listen.ListenSource(config, intake_.accept)
    await source.start()
    await listen_double.wait_connections(1)
    await eventually(lambda: source.ready)
    started = time.monotonic()
    await source.stop()
    assert time.monotonic() - started < 1.0
    assert metric("glue_minio_listen_up", bucket=bucket_name) == 0
    assert await source.readiness() == f"minio listen stream down: {bucket_name} (stopped)"


async def test_a_burst_is_journaled_in_stream_order(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    keys = [f"models/{index:03d}.bin" for index in range(200)]
    steps: list[tuple[Any, ...]] = [
        ("line", _line(record(bucket_name, key, sequencer=f"{index:016X}"))) for index, key in enumerate(keys)
    ]
    listen_double.scripts.append([*steps, ("hold",)])
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name), intake_.accept, max_in_flight=64
    )
    await source.start()
    try:

        async def all_in() -> bool:
            return await journal_.backlog() == len(keys)

        await eventually(all_in)
    finally:
        await source.stop()
    stored = sorted(await journal_.list(limit=1000), key=lambda item: item.seq)
    assert [item.event().get_subject() for item in stored] == keys


async def test_an_old_servers_bare_space_keepalives_do_not_grow_a_line(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    """MinIO before April 2023 ignores ``ping`` and writes a bare space every 500 ms, no newline
    (cmd/listen-notification-handlers.go, keepAliveTicker): 3000 spaces are 25 quiet minutes, far over
    a 1 KiB line. The events around them are journaled on one connection that stays up."""
    listen_double.legacy = True
    listen_double.legacy_interval = 0.05
    release = asyncio.Event()
    listen_double.scripts.append(
        [
            ("raw", b" " * 3000),
            ("line", _line(record(bucket_name, "models/a.bin", request_id="17B2D3C4E5F60701"))),
            ("wait", release),  # more spaces, at the double's pace
            ("raw", b" " * 3000),
            ("line", _line(record(bucket_name, "models/b.bin", request_id="17B2D3C4E5F60702"))),
            ("hold",),
        ]
    )
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name, maxLineBytes=1024), intake_.accept
    )
    await source.start()
    try:
        await eventually(
            lambda: metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == 1
        )
        before = metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="keepalive")
        await eventually(
            lambda: (
                metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="keepalive") >= before + 3
            )
        )
        release.set()
        await eventually(
            lambda: metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == 2
        )
        assert await source.readiness() is None
    finally:
        await source.stop()
    assert sorted(str(item.event().get_subject()) for item in await journal_.list()) == [
        "models/a.bin",
        "models/b.bin",
    ]
    assert len(listen_double.seen) == 1
    assert metric("glue_minio_listen_reconnects_total", bucket=bucket_name) == 0


async def test_an_over_long_line_drops_the_stream_visibly_and_it_reconnects(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    journal_: journal.Journal,
    bucket_name: str,
) -> None:
    """A line over maxLineBytes ends that connection: the stream is shown down (metric, readiness),
    then reopened, and what MinIO sends next is journaled. The gap is counted: MinIO keeps nothing for a
    listener that was away."""
    huge = record(bucket_name, "models/huge.bin")
    huge["s3"]["object"]["userMetadata"] = {"x-amz-meta-blob": "x" * 4096}
    release = asyncio.Event()
    listen_double.scripts.append([("line", _line(huge)), ("hold",)])
    listen_double.scripts.append(
        [("wait", release), ("line", _line(record(bucket_name, "models/next.bin"))), ("hold",)]
    )
    source = minio_listen.ListenSource(
        _config(
            listen_double,
            credential_files,
            bucket_name,
            maxLineBytes=1024,
            reconnectInitial=0.3,
            reconnectMax=0.3,
        ),
        intake_.accept,
    )

    async def down() -> bool:
        reason = await source.readiness()
        return reason == f"minio listen stream down: {bucket_name} (a line is over 1024 bytes)" and (
            metric("glue_minio_listen_up", bucket=bucket_name) == 0
        )

    await source.start()
    try:
        await listen_double.wait_connections(1)
        await eventually(down)
        await listen_double.wait_connections(2)
        release.set()
        await eventually(
            lambda: metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == 1
        )
        assert metric("glue_minio_listen_up", bucket=bucket_name) == 1
    finally:
        await source.stop()
    assert [item.event().get_subject() for item in await journal_.list()] == ["models/next.bin"]
    assert metric("glue_minio_listen_reconnects_total", bucket=bucket_name) == 1
    assert metric("glue_minio_listen_gaps_total", bucket=bucket_name, cause="reconnect") == 1


async def test_a_reader_waiting_for_the_journal_counts_a_gap(
    listen_double: ListenDouble,
    credential_files: dict[str, Path],
    intake_: intake.Intake,
    bucket_name: str,
) -> None:
    """While the reader waits for the journal it reads nothing; MinIO meanwhile drops what the
    listener's full buffer cannot take, without a word (internal/pubsub Publish). Such a wait is the one
    place a loss can be seen from here, and is counted."""
    gate = asyncio.Event()

    async def slow_accept(delivery: events.Delivery) -> list[journal.Appended]:
        await gate.wait()
        return await intake_.accept(delivery)

    keys = [f"models/{index}.bin" for index in range(4)]
    listen_double.scripts.append(
        [
            *[
                ("line", _line(record(bucket_name, key, request_id=f"{index:016X}")))
                for index, key in enumerate(keys)
            ],
            ("drop", _line(record(bucket_name, "models/lost.bin"))),
            ("hold",),
        ]
    )
    source = minio_listen.ListenSource(
        _config(listen_double, credential_files, bucket_name), slow_accept, max_in_flight=2
    )
    await source.start()
    try:
        await eventually(
            lambda: metric("glue_minio_listen_gaps_total", bucket=bucket_name, cause="stalled") == 1
        )
        gate.set()
        await eventually(
            lambda: (
                metric("glue_minio_listen_lines_total", bucket=bucket_name, outcome="journaled") == len(keys)
            )
        )
    finally:
        await source.stop()
    assert metric("glue_minio_listen_gaps_total", bucket=bucket_name, cause="stalled") == 1
    assert listen_double.dropped  # what MinIO dropped never reached the reader: only the gap tells


async def test_event_names_minio_refuses_keep_the_stream_down_with_its_error(
    listen_double: ListenDouble, credential_files: dict[str, Path], intake_: intake.Intake, bucket_name: str
) -> None:
    """The double refuses what ParseName refuses (400 InvalidArgument), as MinIO does; the source
    shows why. (glue check refuses such names first: tests/objectstore/test_settings.py.)"""
    valid = _config(listen_double, credential_files, bucket_name)
    # built past validation, to see what MinIO answers
    refused = valid.buckets[0].model_copy(update={"events": ["s3:Scanner:*"]})
    config = valid.model_copy(update={"buckets": [refused]})
    source = minio_listen.ListenSource(config, intake_.accept)
    await source.start()
    try:
        await listen_double.wait_connections(1, refused=True)

        async def refused_reason() -> bool:
            return (
                await source.readiness()
                == f"minio listen stream down: {bucket_name} (HTTP 400 InvalidArgument)"
            )

        await eventually(refused_reason)
        assert metric("glue_minio_listen_up", bucket=bucket_name) == 0
    finally:
        await source.stop()
