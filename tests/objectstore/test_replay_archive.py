"""`glue replay s3://bucket/prefix`: recordings archived in a bucket (moto's S3 server) are journaled
again through the same decoders; a second replay finds them all journaled; a bad archive is a clear
error, not a stack trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from glue import cli, events, journal, objectstore
from glue import settings as settings_mod
from tests.sources.minio_listen.listen_double import record


def _config(tmp_path: Path, minio: settings_mod.Minio) -> Path:
    path = tmp_path / "glue.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "journal": {"path": str(tmp_path / "journal.db")},
                "sources": {"minio": minio.model_dump(by_alias=True, exclude_none=True, mode="json")},
            }
        )
    )
    return path


async def _archive(minio: settings_mod.Minio, bucket: str, deliveries: list[events.Delivery]) -> None:
    store = objectstore.ObjectStore(minio)
    writer = objectstore.ArchiveWriter(
        store, settings_mod.Archive(bucket=bucket, prefix="prod", recordings=True), close_store=True
    )
    for delivery in deliveries:
        writer.record(delivery)
    await writer.stop()


async def _subjects(tmp_path: Path) -> list[str]:
    store = journal.create(settings_mod.Journal(path=tmp_path / "journal.db"))
    await store.open()
    try:
        return sorted(item.event().get_subject() or "" for item in await store.list())
    finally:
        await store.close()


async def _glue(*argv: str) -> int:
    """The command line as an operator runs it (its own event loop, here in a thread)."""
    return await asyncio.to_thread(cli.main, list(argv))


async def test_replay_from_a_bucket(
    tmp_path: Path, minio_config: settings_mod.Minio, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    deliveries = [
        events.Delivery(
            "http",
            "minio",
            "minio",
            {"content-type": "application/json"},
            orjson.dumps(
                {
                    "EventName": "s3:ObjectCreated:Put",
                    "Key": f"{bucket}/{key}",
                    "Records": [record(bucket, key, escaped=True)],
                }
            ),
        )
        for key in ("models/a b.bin", "models/c.bin")
    ]
    await _archive(minio_config, bucket, deliveries)
    config = str(_config(tmp_path, minio_config))
    url = f"s3://{bucket}/prod/recordings"

    assert await _glue("replay", "--config", config, url) == 0
    assert (
        "2 deliveries replayed: 2 new events journaled, 0 already journaled, 0 failed"
        in capsys.readouterr().out
    )
    assert await _subjects(tmp_path) == ["models/a b.bin", "models/c.bin"]

    assert await _glue("replay", "--config", config, url) == 0
    assert "2 deliveries replayed: 0 new events journaled, 2 already journaled" in capsys.readouterr().out


async def test_replay_from_a_bucket_reports_problems(
    tmp_path: Path, minio_config: settings_mod.Minio, bucket: str, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, minio_config))
    s3.put_object(Bucket=bucket, Key="prod/recordings/date=2026-11-27/x.jsonl", Body=b"not json\n")
    assert await _glue("replay", "--config", config, f"s3://{bucket}/prod/recordings") == 1
    err = capsys.readouterr().err
    assert f"glue: s3://{bucket}/prod/recordings/date=2026-11-27/x.jsonl line 1: not JSON" in err

    assert await _glue("replay", "--config", config, "s3://no-such-bucket-here/prod") == 1
    assert "glue: s3://no-such-bucket-here/prod: NoSuchBucket" in capsys.readouterr().err

    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"journal": {"path": str(tmp_path / "journal.db")}}))
    assert await _glue("replay", "--config", str(bare), f"s3://{bucket}/prod") == 2
    assert "reading a bucket needs sources.minio in the config" in capsys.readouterr().err
