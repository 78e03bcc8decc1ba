"""The EventBus source in a real daemon (HTTP intake on loopback, SQLite journal) against a real
JetStream server: messages published as an Argo EventSource publishes them are journaled once each,
acknowledged only then, unwrapped to the same events as the direct webhooks, poison terminated, and no
credential from Argo's header maps is stored anywhere."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from glue import app, journal
from tests.formats import payloads
from tests.sources.argo_events import bus
from tests.support import base_url, daemon_settings, eventually, metric, running

TOKEN = "glpat-s3cr3t-token-value"


def bus_config(server: bus.Server, **extra: Any) -> dict[str, Any]:
    return {
        "url": server.url,
        "eventSources": [
            {"name": "gitlab-hooks", "unwrap": "gitlab"},
            {"name": "models", "unwrap": "minio"},
            "*",
        ],
        "durable": "runtime-glue",
        "ackWait": 2,
        "reconnectInitial": 0.05,
        "reconnectMax": 0.2,
        **extra,
    }


def counted(outcome: str) -> float:
    return metric("glue_eventbus_messages_total", source="argo-events", outcome=outcome)


async def ready(daemon: app.Daemon) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url(daemon)}/readyz") as response:
        return "" if response.status == 200 else await response.text()


async def events_with(store: journal.Journal, **attributes: str) -> list[journal.StoredEvent]:
    rows = await store.list(limit=1000)
    found = []
    for row in rows:
        event = row.event()
        if all(getattr(event, f"get_{name}")() == value for name, value in attributes.items()):
            found.append(row)
    return found


async def test_unwrapped_bus_events_are_the_direct_webhooks_events_and_no_token_is_stored(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    recording = tmp_path / "recording.jsonl"
    config = daemon_settings(
        tmp_path,
        record=str(recording),
        endpoints=[
            {
                "name": "gitlab",
                "path": "/gitlab",
                "format": "gitlab",
                "auth": {"type": "gitlab-token", "secret": {"value": TOKEN}},
            },
            {"name": "minio", "path": "/minio", "format": "minio"},
        ],
        sources={"argoEvents": bus_config(nats_server)},
    )
    gitlab_headers = payloads.gitlab_headers(idempotency_key=None) | {"x-gitlab-token": TOKEN}
    push = payloads.gitlab_push()
    key = "llm/llama 3+/weights 100%.safetensors"
    async with bus.Publisher(nats_server.url) as publisher, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        assert await ready(daemon) == ""
        journaled, duplicates = counted("journaled"), counted("duplicate")
        base = base_url(daemon)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/gitlab", data=orjson.dumps(push), headers=gitlab_headers) as answer:
                assert answer.status == 202
            record = payloads.minio_record(key)
            async with http.post(f"{base}/minio", json=payloads.minio_envelope(record)) as answer:
                assert answer.status == 202
        # The same deliveries through Argo: GitLab to its gitlab event source, MinIO to its minio one.
        gitlab_msg = bus.message(
            "gitlab-hooks", "push", "gitlab", bus.webhook_data(gitlab_headers, push, plural=True)
        )
        minio_msg = bus.message(
            "models", "put", "minio", {"notification": [payloads.minio_record(key, escaped=False)]}
        )
        calendar = bus.message("calendar", "tick", "calendar", {"eventTime": "2026-07-18 12:00:00"})
        # And one that reached only Argo: its bus message is the delivery the journal keeps.
        only_argo = gitlab_headers | {"x-gitlab-webhook-uuid": "1f2e3d4c-0000-4000-8000-000000000001"}
        only_argo_msg = bus.message(
            "gitlab-hooks", "push", "gitlab", bus.webhook_data(only_argo, push, plural=True)
        )
        for msg in (gitlab_msg, minio_msg, calendar, only_argo_msg):
            await publisher.publish(msg)
        await eventually(
            lambda: counted("duplicate") - duplicates == 2 and counted("journaled") - journaled == 2
        )

        store = daemon.journal
        gitlab_events = await events_with(store, type="gitlab.push")
        assert sorted(row.event().get_id() for row in gitlab_events) == sorted(
            [gitlab_headers["x-gitlab-webhook-uuid"], only_argo["x-gitlab-webhook-uuid"]]
        )
        assert len(await events_with(store, source=f"minio:{record['s3']['bucket']['name']}")) == 1
        [tick] = await events_with(store, source="calendar")
        assert tick.event().get_id() == calendar.event_id and tick.event().get_subject() == "tick"
        assert tick.event().get_type() == "calendar"
        assert tick.event().get_data() == {"eventTime": "2026-07-18 12:00:00"}

        # A redelivery from the bus (the same CloudEvent again) is the same journal entry.
        await publisher.raw(calendar.subject, calendar.payload)
        await eventually(lambda: counted("duplicate") - duplicates == 3)
        assert len(await events_with(store, source="calendar")) == 1
        info = await publisher.consumer("runtime-glue")
        assert info.num_pending == 0 and info.num_ack_pending == 0  # every message acknowledged
        # Every delivery the journal keeps (the duplicates' too), the bus messages' data decoded.
        kept = [d for d in [await daemon.journal.delivery(n) for n in range(1, 20)] if d is not None]
        kept_data = b"".join(
            base64.b64decode(orjson.loads(d.body)["data_base64"]) for d in kept if d.transport == "jetstream"
        )
        assert b"X-Gitlab-Event" in kept_data and TOKEN.encode() not in kept_data

    stored, bus_data = _kept(tmp_path, recording)
    assert b"X-Gitlab-Event" in bus_data  # the recording keeps Argo's header map, less the token
    assert TOKEN.encode() not in bus_data
    assert TOKEN.encode() not in stored
    assert base64.b64encode(TOKEN.encode())[:16] not in stored


async def test_poison_messages_are_rejected_and_terminated_never_redelivered(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, sources={"argoEvents": bus_config(nats_server, ackWait=1)})
    poison = [
        ("default.hooks.a", b"not json"),
        ("default.hooks.b", b'{"hello": "world"}'),
        (
            "default.hooks.c",
            orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "hooks",
                    "type": "webhook",
                    "data_base64": "bm90IGpzb24=",
                }
            ),
        ),
        ("default.gitlab-hooks.push", bus.message("gitlab-hooks", "push", "gitlab", {"body": {}}).payload),
    ]
    async with bus.Publisher(nats_server.url) as publisher, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        rejected = counted("rejected")
        for subject, payload in poison:
            await publisher.raw(subject, payload)
        await eventually(lambda: counted("rejected") - rejected == len(poison))
        reasons = sorted(r.reason for r in await daemon.journal.rejected())
        assert any("message is not valid JSON" in r for r in reasons)
        assert any("not a CloudEvent" in r for r in reasons)
        assert any("'data_base64' is not valid JSON" in r for r in reasons)
        assert any(r.startswith("unwrap gitlab: cannot tell the GitLab event kind") for r in reasons)
        await asyncio.sleep(2.5)  # past the ack wait: a message left unacknowledged would be back
        info = await publisher.consumer("runtime-glue")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
        assert counted("rejected") - rejected == len(poison)
        assert await daemon.journal.list(limit=10) == []


async def test_in_one_fetched_batch_a_poison_message_and_a_repeat_hold_up_no_other_message(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    first = bus.message("calendar", "tick", "calendar", {"n": 1})
    second = bus.message("calendar", "tick", "calendar", {"n": 2})
    async with bus.Publisher(nats_server.url) as publisher:
        # In the stream before the consumer exists: its first pull request fetches them together.
        await publisher.publish(first)
        await publisher.raw("default.hooks.a", b"not json")
        await publisher.raw(first.subject, first.payload)  # the same CloudEvent sent again
        await publisher.publish(second)
        config = daemon_settings(tmp_path, sources={"argoEvents": bus_config(nats_server, deliver="all")})
        before = {outcome: counted(outcome) for outcome in ("journaled", "duplicate", "rejected")}
        async with running(config) as daemon:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            await eventually(lambda: _all_acknowledged(publisher))
            stored = await daemon.journal.list(limit=10)
            assert [row.event().get_id() for row in stored] == [first.event_id, second.event_id]
            (rejected,) = await daemon.journal.rejected()
            assert rejected.delivery.body == b"not json"
            assert {outcome: counted(outcome) - n for outcome, n in before.items()} == {
                "journaled": 2,
                "duplicate": 1,
                "rejected": 1,
            }
            info = await publisher.consumer("runtime-glue")
            assert info.num_redelivered == 0


async def test_a_lost_connection_shows_in_readiness_and_the_source_reconnects(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, sources={"argoEvents": bus_config(nats_server)})
    async with running(config) as daemon:
        down = "argo events eventbus down: stream 'default' not found"
        await eventually(lambda: _contains(ready(daemon), down))
        assert metric("glue_source_up", source="argo-events") == 0
        async with bus.Publisher(nats_server.url):
            pass  # an EventSource starts and creates the stream
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        reconnects = metric("glue_source_reconnects_total", source="argo-events")

        bus.stop_server(nats_server)
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 0)
        assert "argo events eventbus down" in await ready(daemon)

        restarted = bus.start_server(nats_server.store.parent, port=nats_server.port)
        try:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            assert metric("glue_source_reconnects_total", source="argo-events") == reconnects + 1
            async with bus.Publisher(restarted.url) as publisher:
                msg = bus.message("calendar", "tick", "calendar", {"n": 1})
                await publisher.publish(msg)
                await eventually(lambda: events_with(daemon.journal, id=msg.event_id))
            assert await ready(daemon) == ""
        finally:
            bus.stop_server(restarted)


async def _contains(text: Any, part: str) -> bool:
    return part in await text


def _kept(tmp_path: Path, recording: Path) -> tuple[bytes, bytes]:
    """What the daemon wrote (journal files and the recording), and the data of the bus messages it
    recorded, base64 decoded."""
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("journal.db*")) + recording.read_bytes()
    lines = [orjson.loads(line) for line in recording.read_bytes().splitlines()]
    bus_data = b"".join(
        base64.b64decode(orjson.loads(line["body"])["data_base64"])
        for line in lines
        if line["transport"] == "jetstream"
    )
    return stored, bus_data


async def test_a_message_the_journal_cannot_take_is_not_acknowledged_and_comes_back(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    # No executor routes the first event, so it stays pending: the backlog bound (1) refuses the
    # second message, as intake refuses it when the journal is unavailable.
    source = bus_config(nats_server, ackWait=1)
    full = daemon_settings(
        tmp_path,
        server={"host": "127.0.0.1", "port": 0, "maxBacklog": 1},
        execution={"enabled": False},
        sources={"argoEvents": source},
    )
    first, second = (bus.message("calendar", "tick", "calendar", {"n": n}) for n in (1, 2))
    async with bus.Publisher(nats_server.url) as publisher:
        async with running(full) as daemon:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            retried, journaled = counted("retried"), counted("journaled")
            await publisher.publish(first)
            # Counted once acknowledged, so intake has counted it in its backlog (the journal shows it
            # from its commit on, before that).
            await eventually(lambda: counted("journaled") > journaled)
            assert await events_with(daemon.journal, id=first.event_id)
            await publisher.publish(second)
            await eventually(lambda: counted("retried") - retried >= 2, within=30)  # sent again after ackWait
            info = await publisher.consumer("runtime-glue")
            assert info.num_ack_pending == 1 and info.num_redelivered >= 1
            assert await events_with(daemon.journal, id=second.event_id) == []
        # The same daemon with room (its executor routes what waits): the message comes back, journaled.
        roomy = daemon_settings(tmp_path, sources={"argoEvents": source})
        async with running(roomy) as daemon:
            await eventually(lambda: events_with(daemon.journal, id=second.event_id), within=30)
            await eventually(lambda: _all_acknowledged(publisher))


async def _all_acknowledged(publisher: bus.Publisher) -> bool:
    info = await publisher.consumer("runtime-glue")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def test_a_new_consumer_takes_new_messages_or_with_deliver_all_what_the_stream_keeps(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    before = bus.message("calendar", "tick", "calendar", {"n": "before"})
    after = bus.message("calendar", "tick", "calendar", {"n": "after"})
    async with bus.Publisher(nats_server.url) as publisher:
        await publisher.publish(before)
        fresh = daemon_settings(
            tmp_path / "new", sources={"argoEvents": bus_config(nats_server, durable="fresh")}
        )
        async with running(fresh) as daemon:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            await publisher.publish(after)
            await eventually(lambda: events_with(daemon.journal, id=after.event_id))
            assert await events_with(daemon.journal, id=before.event_id) == []
            info = await publisher.consumer("fresh")
            assert info.config.max_ack_pending == 2048  # maxInFlight, held by the server too
        importing = daemon_settings(
            tmp_path / "all", sources={"argoEvents": bus_config(nats_server, durable="import", deliver="all")}
        )
        async with running(importing) as daemon:
            await eventually(lambda: _count(daemon.journal, 2))
            assert {row.event().get_id() for row in await daemon.journal.list()} == {
                before.event_id,
                after.event_id,
            }


async def _count(store: journal.Journal, n: int) -> bool:
    return len(await store.list(limit=100)) >= n


async def test_while_the_commit_waits_the_message_is_kept_in_progress_not_redelivered(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    config = daemon_settings(tmp_path, sources={"argoEvents": bus_config(nats_server, ackWait=1)})
    msg = bus.message("calendar", "tick", "calendar", {"n": 1})
    async with bus.Publisher(nats_server.url) as publisher, running(config) as daemon:
        await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
        # Another process holds the journal's write lock: the commit waits (SQLite's busy timeout).
        holder = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            await publisher.publish(msg)
            await asyncio.sleep(3.5)  # three ack waits
            info = await publisher.consumer("runtime-glue")
            assert info.num_ack_pending == 1 and info.num_redelivered == 0
            assert await events_with(daemon.journal, id=msg.event_id) == []
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await eventually(lambda: events_with(daemon.journal, id=msg.event_id))
        await eventually(lambda: _all_acknowledged(publisher))
        assert (await publisher.consumer("runtime-glue")).num_redelivered == 0


async def test_the_consumer_takes_only_the_listed_event_sources(
    nats_server: bus.Server, tmp_path: Path
) -> None:
    source = bus_config(nats_server, eventSources=["gitlab-hooks", "calendar.tick"])
    taken = [
        bus.message("gitlab-hooks", "tag", "webhook", {"n": 1}),
        bus.message("calendar", "tick", "calendar", {}),
    ]
    left = [bus.message("calendar", "other", "calendar", {}), bus.message("sqs", "queue", "sqs", {})]
    async with bus.Publisher(nats_server.url) as publisher:
        async with running(daemon_settings(tmp_path, sources={"argoEvents": source})) as daemon:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            for msg in [*left, *taken]:
                await publisher.publish(msg)
            await eventually(lambda: _count(daemon.journal, 2))
            await eventually(lambda: _all_acknowledged(publisher))
            assert {row.event().get_id() for row in await daemon.journal.list()} == {
                m.event_id for m in taken
            }
            info = await publisher.consumer("runtime-glue")
            assert sorted(info.config.filter_subjects or []) == [
                "default.calendar.tick",
                "default.gitlab-hooks.*",
            ]
        # Listed differently at the next start: the same durable consumer follows the new list.
        wider = bus_config(nats_server, eventSources=["*"])
        async with running(daemon_settings(tmp_path, sources={"argoEvents": wider})) as daemon:
            await eventually(lambda: metric("glue_source_up", source="argo-events") == 1)
            later = bus.message("sqs", "queue", "sqs", {"n": 3})
            await publisher.publish(later)
            await eventually(lambda: events_with(daemon.journal, id=later.event_id))
