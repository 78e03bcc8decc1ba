"""Dispatch benchmark: journal -> routing -> handler, and HTTP receipt -> handler start latency.

1. Throughput. A SQLite journal is filled with ``--events`` CloudEvents (one delivery each), then one
   executor routes them (a CEL match over attributes and nested data, two parameter templates, an
   ordering-free route) and runs a no-op handler. Reported: events per second from the first claim
   to the last outcome committed.
2. Latency. The real daemon (HTTP intake, SQLite journal, executor) runs in this process; a sender in
   a child process POSTs structured CloudEvents at ``--rate`` per second for ``--seconds``, each
   stamped with its send time. The handler records ``start - sent``: HTTP receipt (plus the loopback
   hop) to handler start, through the journal commit, routing and the claim.

Both report CPU time per event (user + system, every thread of this process; the sender is another
process): on a shared machine wall-clock rates swing with the neighbours' load, CPU per event much less.
The event loop is the daemon's default (uvloop; ``--loop asyncio`` for the standard one).

    python bench/dispatch.py [--events 20000] [--rate 1000] [--seconds 10] [--synchronous full]
                             [--loop uvloop|asyncio]

Last line: ``events_per_s=<n> p99_ms=<n>`` (targets: >= 3,000 events/s on one core, p99 <= 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import resource
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import glue
from glue import app, contract, events, journal, observability, pipeline, settings

MATCH = 'type == "com.example.model.updated" && data.model.name.startsWith("llm-") && data.replicas > 0'
PARAMS = {"name": "{{ data.model.name }}", "replicas": "{{ data.replicas }}"}


class NoopParams(glue.Params):
    name: str
    replicas: int


class Probe:
    """What the no-op handler saw: how many ran, and send-to-start latencies."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.latencies: list[float] = []

    def hit(self, event: Any) -> None:
        self.count += 1
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


# -- 1. throughput ---------------------------------------------------------------------------------


async def fill(store: journal.Journal, count: int) -> None:
    async def one(index: int) -> None:
        event = cloudevent(index)
        body = events.to_json(event)
        delivery = events.Delivery(
            "bench", "bench", "cloudevents", {"content-type": "application/cloudevents+json"}, body
        )
        await store.append(delivery, [event])

    for start in range(0, count, 1000):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 1000, count))))


async def throughput(count: int, directory: pathlib.Path, synchronous: str) -> tuple[float, float]:
    """Events per second and CPU microseconds per event, from the first claim to the last outcome."""
    config = settings.Journal(path=directory / "throughput.db", synchronous=synchronous)  # type: ignore[arg-type]
    store = journal.create(config)
    await store.open()
    try:
        await fill(store, count)
        loaded = settings.from_mapping(
            {
                "routes": [{"name": "scale", "match": MATCH, "handler": "bench.noop", "params": PARAMS}],
                "execution": {"concurrency": 256, "batch": 500, "pollSeconds": 0.01, "owner": "bench"},
            },
            "bench",
        )
        clients = contract.Clients(contract.registry, {})
        executor = pipeline.make_executor(loaded, store, contract.registry, clients)
        assert executor is not None
        PROBE.count, PROBE.target = 0, count
        PROBE.done.clear()
        started, cpu = time.perf_counter(), cpu_seconds()
        await executor.start()
        await PROBE.done.wait()
        await executor.stop()  # the last outcomes are committed here
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        done = await store.invocations(state="done", limit=count + 1)
        if len(done) != count:
            raise SystemExit(f"expected {count} invocations done, found {len(done)}")
    finally:
        await store.close()
    return count / elapsed, cpu / count * 1e6


# -- 2. latency ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send(url: str, rate: float, seconds: float) -> None:
    """Child process: POST one event every 1/rate s (open loop: a slow answer does not delay the next)."""
    import aiohttp

    total = int(rate * seconds)
    failures = 0
    answered: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(index: int) -> None:
            nonlocal failures
            sent_at = time.time()
            body = events.to_json(cloudevent(1_000_000 + index, sent_at=sent_at))
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
    answered.sort()
    p50, p99 = answered[len(answered) // 2], answered[int(len(answered) * 0.99)]
    print(f"sent={total} failed={failures} answer (202) p50={p50:.1f} ms p99={p99:.1f} ms", flush=True)


async def latency(
    rate: float, seconds: float, directory: pathlib.Path, synchronous: str
) -> tuple[list[float], float]:
    """Send-to-handler-start latencies, and the daemon's CPU microseconds per event meanwhile."""
    port = free_port()
    config = settings.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "journal": {"path": str(directory / "latency.db"), "synchronous": synchronous},
            "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
            "routes": [{"name": "scale", "match": MATCH, "handler": "bench.noop", "params": PARAMS}],
            "execution": {"concurrency": 256, "pollSeconds": 0.5},
        },
        "bench",
    )
    daemon = app.Daemon(config)
    PROBE.count, PROBE.latencies = 0, []
    PROBE.target = int(rate * seconds)
    PROBE.done.clear()
    await daemon.start()
    cpu = cpu_seconds()
    try:
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--send",
            f"http://127.0.0.1:{port}/events",
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            stdout=subprocess.PIPE,
        )
        output, _ = await sender.communicate()
        print(output.decode().strip(), file=sys.stderr)
        try:
            await asyncio.wait_for(PROBE.done.wait(), timeout=30)
        except TimeoutError:
            print(f"only {PROBE.count} of {PROBE.target} events reached the handler", file=sys.stderr)
        cpu = cpu_seconds() - cpu
    finally:
        await daemon.stop()
    return PROBE.latencies, cpu / max(PROBE.count, 1) * 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop")
    parser.add_argument("--send", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        await send(args.send, args.rate, args.seconds)
        return
    with tempfile.TemporaryDirectory(prefix="glue-bench-") as tmp:
        directory = pathlib.Path(tmp)
        rate, cpu = await throughput(args.events, directory, args.synchronous)
        print(
            f"throughput: {args.events} events, journal -> routing -> no-op handler: {rate:,.0f} events/s,"
            f" {cpu:.0f} us of CPU per event"
        )
        latencies, cpu = await latency(args.rate, args.seconds, directory, args.synchronous)
    if not latencies:
        raise SystemExit("no latency samples")
    ms = [value * 1000 for value in latencies]
    print(
        f"latency at {args.rate:g} events/s for {args.seconds:g} s, HTTP receipt -> handler start:"
        f" p50={percentile(ms, 0.5):.1f} ms p99={percentile(ms, 0.99):.1f} ms max={max(ms):.1f} ms"
        f" ({len(ms)} samples); the daemon used {cpu:.0f} us of CPU per event (intake and dispatch)"
    )
    print(f"events_per_s={rate:.0f} p99_ms={percentile(ms, 0.99):.1f}")


if __name__ == "__main__":
    # Logs as in production (one JSON line per dispatch), rendered but written to /dev/null.
    loop_factory = None
    if "--loop" not in sys.argv or sys.argv[sys.argv.index("--loop") + 1 :][:1] != ["asyncio"]:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=loop_factory) as runner:
        observability.configure_logging(settings.Logging(format="json"), stream=devnull)
        runner.run(main())
