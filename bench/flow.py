"""Flow-shaping benchmark: what coalescing, concurrency groups and rate limits cost per event, against
the same route without them, in one run.

A SQLite journal is filled with ``--events`` CloudEvents (one delivery each, 50 keys), then one
executor routes them and runs a no-op handler, once per variant of the route:

- ``plain``: no shaping (the baseline);
- ``queue``: ``concurrencyGroup {key, onConflict: queue}`` (what ``orderingKey`` was);
- ``supersede``: the same group with ``onConflict: supersede`` (routing records through the journal's
  shaping statements);
- ``coalesce``: ``coalesce {key, window: 20ms}`` (most events end ``coalesced``);
- ``rate``: ``rateLimit`` with a bucket that never runs dry (one token transaction per invocation).

Reported per variant: events per second from the first claim until every invocation has ended, and CPU
microseconds per event (user + system, this process), with the ratio to ``plain``. Wall-clock rates
swing on a shared machine; CPU per event much less.

    python bench/flow.py [--events 10000]

Last line: ``cpu_ratio supersede=<x> coalesce=<x> rate=<x>`` (CPU per event against plain).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import resource
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import glue
from glue import contract, events, journal, observability, pipeline, settings

KEY = "{{ data.model.name }}"
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "queue": {"concurrencyGroup": {"key": KEY, "onConflict": "queue"}},
    "supersede": {"concurrencyGroup": {"key": KEY, "onConflict": "supersede"}},
    "coalesce": {"coalesce": {"key": KEY, "window": "20ms", "maxWait": "200ms"}},
    "rate": {"rateLimit": {"rate": 1_000_000, "per": "1s", "burst": 100_000, "key": KEY}},
}


class NoopParams(glue.Params):
    name: str


CALLS = 0


@glue.handler("bench.flow.noop", params=NoopParams)
async def noop(**_: Any) -> None:
    """Does nothing; counts."""
    global CALLS
    CALLS += 1


def cloudevent(index: int) -> events.CloudEvent:
    return events.CloudEvent(
        {
            "id": f"bench-{index}",
            "source": "/bench",
            "type": "com.example.model.updated",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        {"model": {"name": f"llm-{index % 50}", "revision": index}},
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fill(store: journal.Journal, count: int) -> None:
    async def one(index: int) -> None:
        event = cloudevent(index)
        delivery = events.Delivery(
            "bench",
            "bench",
            "cloudevents",
            {"content-type": "application/cloudevents+json"},
            events.to_json(event),
        )
        await store.append(delivery, [event])

    for start in range(0, count, 1000):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 1000, count))))


async def unfinished(store: journal.Journal) -> bool:
    if await store.backlog():
        return True
    states: tuple[journal.InvocationState, ...] = ("pending", "running")
    for state in states:
        if await store.invocations(state=state, limit=1):
            return True
    return False


async def run(
    name: str, shaping: dict[str, Any], count: int, directory: pathlib.Path
) -> tuple[float, float, int]:
    """Events per second, CPU microseconds per event, handler calls."""
    global CALLS
    store = journal.create(settings.Journal(path=directory / f"{name}.db"))
    await store.open()
    try:
        await fill(store, count)
        route = {
            "name": "scale",
            "match": 'type == "com.example.model.updated"',
            "handler": "bench.flow.noop",
            "params": {"name": KEY},
            **shaping,
        }
        loaded = settings.from_mapping(
            {
                "routes": [route],
                "execution": {"concurrency": 256, "batch": 500, "pollSeconds": 0.01, "owner": "bench"},
            },
            "bench",
        )
        clients = contract.Clients(contract.registry, {})
        executor = pipeline.make_executor(loaded, store, contract.registry, clients)
        assert executor is not None
        CALLS = 0
        started, cpu = time.perf_counter(), cpu_seconds()
        await executor.start()
        while await unfinished(store):  # noqa: ASYNC110 (the journal is the state polled, as glue's own loops do)
            await asyncio.sleep(0.01)
        await executor.stop()
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        total = len(await store.invocations(limit=count + 1))
        if total != count:
            raise SystemExit(f"{name}: expected {count} invocations, found {total}")
    finally:
        await store.close()
    return count / elapsed, cpu / count * 1e6, CALLS


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    results: dict[str, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shaping in VARIANTS.items():
            results[name] = await run(name, shaping, args.events, pathlib.Path(tmp))
            rate, cpu, calls = results[name]
            ratio = cpu / results["plain"][1]
            print(
                f"{name:<10} events_per_s={rate:8.0f} cpu_us_per_event={cpu:7.1f} "
                f"cpu_vs_plain={ratio:5.2f} handler_calls={calls}",
                flush=True,
            )
    plain = results["plain"][1]
    print(
        "cpu_ratio "
        + " ".join(f"{name}={results[name][1] / plain:.2f}" for name in ("supersede", "coalesce", "rate"))
    )


if __name__ == "__main__":
    # Logs as in production (one JSON line per dispatch), rendered but written to /dev/null; uvloop.
    import uvloop

    with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        observability.configure_logging(settings.Logging(format="json"), stream=devnull)
        runner.run(main())
