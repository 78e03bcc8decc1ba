"""Console benchmark: each page's answer time with ``--events`` (default 100,000) in the journal.

A SQLite journal is filled with that many CloudEvents of a few types and sources (100 per delivery),
received evenly over the last ``--hours`` (default 24: a journal holding a day; ``--hours 1`` puts all
of them in the overview's hour, its worst case), each routed to one route and settled (one in 50
dead-lettered, one in 500 waiting for approval), so every page has rows to read. Then the real daemon
runs on it (admin listener and console) and each page is fetched ``--requests`` times with a bearer
token, one request at a time; the baseline is the console's stylesheet, a static file served by the
same listener and middleware.

    python bench/console.py [--events 100000] [--hours 24] [--requests 50]

Prints one line per page: its first view, p50 and p99 in milliseconds, and the p99 over the
baseline's. Target: every page's p99 under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import aiohttp
from cloudevents.core.v1.event import CloudEvent

from glue import app, events, journal, observability, settings

TOKEN = "bench-console-token"
TYPES = ("gitlab.push", "gitlab.merge_request", "harbor.artifact.pushed", "minio.ObjectCreated:Put")
SOURCES = ("gitlab", "harbor", "minio")


def config(directory: pathlib.Path) -> settings.Settings:
    return settings.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "warning"},
            "journal": {"path": str(directory / "journal.db")},
            "execution": {"enabled": True, "pollSeconds": 1.0},
            "admin": {"port": 0, "tokens": {"bench": {"value": TOKEN}}},
            "endpoints": [{"name": "ce", "path": "/events", "format": "cloudevents"}],
            "routes": [
                {
                    "name": "deploy",
                    "match": 'type == "gitlab.push"',
                    "handler": "log",
                    "params": {"message": "x"},
                },
                {"name": "scan", "match": 'type.startsWith("harbor.")', "handler": "log", "params": {}},
            ],
        },
        "bench",
    )


async def fill(store: journal.Journal, count: int, hours: float) -> None:
    """``count`` events received over the last ``hours``, routed and settled as a daemon would have."""
    now = time.time()
    span = hours * 3600
    for start in range(0, count, 100):
        batch = [
            CloudEvent(
                {
                    "id": f"e-{n}",
                    "source": SOURCES[n % len(SOURCES)],
                    "type": TYPES[n % len(TYPES)],
                    "subject": f"project-{n % 37}",
                    "specversion": "1.0",
                    "datacontenttype": "application/json",
                },
                {"n": n, "message": "x" * 200},
            )
            for n in range(start, min(start + 100, count))
        ]
        at = now - span + span * start / count
        body = events.to_json(batch[0])
        delivery = events.Delivery("http", "ce", "cloudevents", {}, body, received_at=at)
        await store.append(delivery, batch)
        claimed = await store.claim_events("bench", limit=100, lease=60, now=at)
        await store.record_routing(
            "bench",
            {
                stored.seq: [
                    journal.NewInvocation(
                        route="deploy" if stored.type == "gitlab.push" else "scan",
                        handler="log",
                        idempotency_key=journal.idempotency_key(stored.identity, "r"),
                        params={"message": stored.id},
                        due_at=at,
                    )
                ]
                for stored in claimed
            },
            now=at,
        )
        running = await store.claim_invocations("bench", limit=100, lease=60, now=at)
        outcomes, waiting = [], []
        for item in running:
            if item.event_seq % 500 == 0:
                waiting.append(item.id)
                continue
            if item.event_seq % 50 == 0:
                outcomes.append(
                    journal.Outcome(item.id, "dead", error="HTTP 503", started_at=at, duration=0.01)
                )
            else:
                outcomes.append(journal.Outcome(item.id, "done", started_at=at, duration=0.01))
        await store.settle("bench", outcomes, now=at)
        for invocation in waiting:
            await store.await_approval("bench", invocation, {"summary": "x"}, deadline=now + 86400, now=at)


async def timed(http: aiohttp.ClientSession, url: str, requests: int) -> list[float]:
    took = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(requests):
        started = time.perf_counter()
        async with http.get(url, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise SystemExit(f"{url}: HTTP {response.status}")
        took.append((time.perf_counter() - started) * 1000)
    return took


async def main(args: argparse.Namespace) -> None:
    observability.configure_logging(settings.Logging(level="warning"))
    with tempfile.TemporaryDirectory() as directory:
        loaded = config(pathlib.Path(directory))
        store = journal.create(loaded.journal)
        await store.open()
        started = time.perf_counter()
        await fill(store, args.events, args.hours)
        await store.close()
        print(f"filled {args.events} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        app.load_plugins(loaded)
        daemon = app.Daemon(loaded)
        await daemon.start()
        try:
            assert daemon.pipeline is not None
            [api] = [w for w in daemon.pipeline.workers if w.name == "admin-api"]
            base = f"http://127.0.0.1:{api.port}/ui"  # type: ignore[attr-defined]
            middle = args.events // 2
            pages: dict[str, str] = {
                "baseline (static file)": "/static/console.css",
                "overview": "/",
                "events": "/events",
                "events ?type=&subject=": "/events?type=gitlab.push&subject=project-3",
                "events ?source=&status=": "/events?source=harbor&status=routed",
                "events older page": f"/events?before={middle}",
                "event": f"/events/{middle}",
                "routes": "/routes",
                "dead letters": "/dead-letters",
                "approvals": "/approvals",
                "audit": "/audit",
            }
            results: dict[str, Any] = {}
            first: dict[str, float] = {}
            async with aiohttp.ClientSession() as http:
                for name, path in pages.items():
                    # the first view reads what later ones find cached (the overview's complete buckets)
                    first[name], *_ = await timed(http, base + path, 3)
                    results[name] = await timed(http, base + path, args.requests)
        finally:
            await daemon.stop()
    baseline = _p99(results["baseline (static file)"])
    print(f"{'page':28} {'first ms':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99/baseline':>13}")
    for name, took in results.items():
        p50, p99 = statistics.median(took), _p99(took)
        print(f"{name:28} {first[name]:9.1f} {p50:8.1f} {p99:8.1f} {p99 / baseline:12.1f}x")
    slowest = max((n for n in results if not n.startswith("baseline")), key=lambda n: _p99(results[n]))
    print(
        f"events={args.events} hours={args.hours:g} slowest={slowest!r}"
        f" p99_ms={_p99(results[slowest]):.1f} target_ms=200"
    )


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--requests", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
