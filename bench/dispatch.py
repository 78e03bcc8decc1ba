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
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from glue import app, contract, events, journal, observability, pipeline, settings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _paced import PROBE, ROUTE, cloudevent, cpu_seconds, daemon_settings, free_port, paced, percentile

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
                "routes": [ROUTE],
                "execution": {"concurrency": 256, "batch": 500, "pollSeconds": 0.01, "owner": "bench"},
            },
            "bench",
        )
        clients = contract.Clients(contract.registry, {})
        executor = pipeline.make_executor(loaded, store, contract.registry, clients)
        assert executor is not None
        PROBE.reset(count)
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


async def latency(
    rate: float, seconds: float, directory: pathlib.Path, synchronous: str
) -> tuple[list[float], float]:
    """Send-to-handler-start latencies, and the daemon's CPU microseconds per event meanwhile."""
    port = free_port()
    config = daemon_settings(
        port,
        {"path": str(directory / "latency.db"), "synchronous": synchronous},
        execution={"concurrency": 256, "pollSeconds": 0.5},
    )
    daemon = app.Daemon(config)
    PROBE.reset(int(rate * seconds))
    await daemon.start()
    cpu = cpu_seconds()
    try:
        print(await paced(f"http://127.0.0.1:{port}/events", rate, seconds, 1_000_000), file=sys.stderr)
        try:
            await asyncio.wait_for(PROBE.done.wait(), timeout=30)
        except TimeoutError:
            print(f"only {PROBE.count} of {PROBE.target} events reached the handler", file=sys.stderr)
        cpu = cpu_seconds() - cpu
    finally:
        await daemon.stop()
    return PROBE.latencies, cpu / max(PROBE.count, 1) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop")
    args = parser.parse_args()
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
