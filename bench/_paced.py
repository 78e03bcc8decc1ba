"""Paced load on the real daemon, shared by bench/dispatch.py and bench/cost.py.

A no-op handler that records how long after its send each event started; CloudEvents stamped with
their send time; a sender (a child process running this module) that POSTs them open-loop at a fixed
rate; and the daemon's CPU time. The sender is another process, so the CPU this process spends is the
daemon's (plus the few calls that drive it).

    python bench/_paced.py URL RATE SECONDS [FIRST]   (the sender; prints its answer latencies)
"""

from __future__ import annotations

import asyncio
import pathlib
import resource
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import glue
from glue import events, settings

MATCH = 'type == "com.example.model.updated" && data.model.name.startsWith("llm-") && data.replicas > 0'
PARAMS = {"name": "{{ data.model.name }}", "replicas": "{{ data.replicas }}"}
ROUTE = {"name": "scale", "match": MATCH, "handler": "bench.noop", "params": PARAMS}


class NoopParams(glue.Params):
    name: str
    replicas: int


class Probe:
    """What the no-op handler saw: how many ran, and send-to-start latencies (seconds)."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.latencies: list[float] = []
        #: The handler count from which the run is steady, and the CPU time when it was reached.
        self.steady_from = 0
        self.steady_cpu = 0.0

    def reset(self, target: int, steady_from: int = 0) -> None:
        self.count, self.target, self.latencies = 0, target, []
        self.steady_from, self.steady_cpu = steady_from, cpu_seconds()
        self.done.clear()

    def hit(self, event: Any) -> None:
        self.count += 1
        if self.count == self.steady_from:
            self.steady_cpu = cpu_seconds()
        data = event.get_data()
        if isinstance(data, dict) and "sentAt" in data:
            self.latencies.append(time.time() - float(data["sentAt"]))
        if self.target and self.count >= self.target:
            self.done.set()


PROBE = Probe()


@glue.handler("bench.noop", params=NoopParams)
async def noop(*, event: Any, **_: Any) -> None:
    """Does nothing; counts."""
    PROBE.hit(event)


def cloudevent(index: int, sent_at: float | None = None) -> events.CloudEvent:
    data: dict[str, Any] = {
        "model": {"name": f"llm-{index % 50}", "revision": index},
        "replicas": 1 + index % 3,
    }
    if sent_at is not None:
        data["sentAt"] = sent_at
    return events.CloudEvent(
        {
            "id": f"bench-{index}",
            "source": "/bench",
            "type": "com.example.model.updated",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data,
    )


def cpu_seconds() -> float:
    """CPU time of this process so far, user and system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def daemon_settings(port: int, journal: dict[str, Any], **more: Any) -> settings.Settings:
    """The daemon the latency and cost benches drive: CloudEvents over HTTP at ``/events`` on
    ``port``, the ``journal`` settings given, :data:`ROUTE` to the probe (``more``: other sections)."""
    return settings.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "journal": journal,
            "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
            "routes": [ROUTE],
            **more,
        },
        "bench",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced(url: str, rate: float, seconds: float, first: int = 0) -> str:
    """Run the sender for ``rate`` x ``seconds`` events (ids from ``first``); returns its summary line."""
    sender = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        url,
        str(rate),
        str(seconds),
        str(first),
        stdout=subprocess.PIPE,
    )
    output, _ = await sender.communicate()
    return output.decode().strip()


async def send(url: str, rate: float, seconds: float, first: int) -> None:
    """POST one event every 1/rate s (open loop: a slow answer does not delay the next)."""
    import aiohttp

    total = int(rate * seconds)
    failures = 0
    answered: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(index: int) -> None:
            nonlocal failures
            sent_at = time.time()
            body = events.to_json(cloudevent(first + index, sent_at=sent_at))
            headers = {"Content-Type": "application/cloudevents+json"}
            async with session.post(url, data=body, headers=headers) as response:
                if response.status != 202:
                    failures += 1
                await response.read()
            answered.append((time.time() - sent_at) * 1000)

        loop = asyncio.get_running_loop()
        begin = loop.time()
        tasks = []
        for index in range(total):
            delay = begin + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(index)))
        await asyncio.gather(*tasks)
    p50, p99 = percentile(answered, 0.5), percentile(answered, 0.99)
    print(f"sent={total} failed={failures} answer (202) p50={p50:.1f} ms p99={p99:.1f} ms", flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.run(send(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
