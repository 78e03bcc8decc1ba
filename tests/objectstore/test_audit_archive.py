"""The audit trail goes to the bucket archive (moto S3, as the other archive tests): an operator's
pause through the journal (as ``glue routes pause`` does from another process) and the daemon's own
start, with its config hash, land under ``audit/`` when the daemon drains."""

from __future__ import annotations

import time
from pathlib import Path

from glue import app, auditlog, journal, objectstore, operations
from glue import settings as settings_mod
from tests.support import daemon_settings, running


async def test_operator_actions_and_the_start_are_archived(
    minio_config: settings_mod.Minio, bucket: str, tmp_path: Path
) -> None:
    config = daemon_settings(
        tmp_path,
        sources={"minio": minio_config.model_dump(by_alias=True, exclude_none=True, mode="json")},
        archive={"bucket": bucket, "prefix": "ops", "flushSeconds": 3600},
        routes=[{"name": "restart", "handler": "log", "params": {"message": "m"}}],
    )
    app.load_plugins(config)
    async with running(config):
        operator = journal.create(config.journal)  # another process's journal, as the CLI opens it
        await operator.open()
        try:
            who = operations.Actor("alice", time.time)
            await operations.pause(operator, None, "restart", who, reason="change freeze", seconds=None)
        finally:
            await operator.close()
    store = objectstore.ObjectStore(minio_config)
    try:
        lines = [line async for line in objectstore.read_archive(store, f"s3://{bucket}/ops/audit")]
    finally:
        store.close()
    assert [(line["action"], line["who"]) for line in lines][1:] == [("pause", "alice")]
    assert lines[0]["action"] == "start"
    assert lines[0]["detail"]["configHash"] == auditlog.config_hash(config)
    assert lines[1]["route"] == "restart" and lines[1]["reason"] == "change freeze"
