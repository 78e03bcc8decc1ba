"""Cost per event at platform rates (issue 23): the daemon's CPU per event and the latency from HTTP
receipt to handler start, at 100, 1,000 and 3,000 events/s in one run.

The real daemon (HTTP intake, SQLite journal with its default durability, the executor, one route to a
no-op handler) runs in this process on its default loop (uvloop); a sender in a child process POSTs
CloudEvents open-loop at each rate for ``--seconds``, each stamped with its send time. The first
second of each rate is its warm-up (new connections): CPU per event and the percentiles count the
events after it. Also measured: the daemon's CPU while idle (its loops when no event comes).

Baseline, in the same run: a bare aiohttp endpoint (parse the JSON, answer 202) in this process on the
same loop, receiving the same load from the same sender; its CPU per request is what the machine
charges for HTTP alone at that rate, so a reader can tell machine noise from glue's own cost. And the
CPU of one durable commit alone (one row, SQLite in WAL mode with an fsync per commit): at 100/s each
event commits alone, so bare aiohttp plus this is the least an event acknowledged after its commit
can cost there.

    python bench/cost.py [--seconds 10] [--rates 100,1000,3000] [--synchronous full|normal]

Last line: ``cpu_us_100=<n> cpu_us_1000=<n> p99_ms_1000=<n> p99_ms_3000=<n>`` (targets: <= 400 and
<= 250 us of CPU per event, p99 <= 10 ms at 1,000/s and <= 50 ms at 3,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import pathlib
import sqlite3
import sys
import tempfile

import orjson
from aiohttp import web

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _paced import PROBE, cpu_seconds, daemon_settings, free_port, paced, percentile

from glue import app, observability, settings

IDLE_SECONDS = 5.0


@dataclasses.dataclass
class Measured:
    cpu_us: float
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    answers: str = ""


async def bare(rates: list[float], seconds: float) -> dict[float, Measured]:
    """CPU per request of a bare aiohttp endpoint at each rate."""
    count = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal count
        orjson.loads(await request.read())
        count += 1
        return web.json_response({"ids": [request.headers.get("ce-id")]}, status=202)

    server = web.Application()
    server.router.add_post("/events", receive)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    found: dict[float, Measured] = {}
    try:
        for rate in rates:
            count, cpu = 0, cpu_seconds()
            answers = await paced(f"http://127.0.0.1:{port}/events", rate, seconds)
            found[rate] = Measured((cpu_seconds() - cpu) / max(count, 1) * 1e6, answers=answers)
    finally:
        await runner.cleanup()
    return found


def durable_commit(directory: pathlib.Path, commits: int = 2000) -> float:
    """CPU per commit of one small row into a SQLite database in WAL mode with the journal's default
    durability (``synchronous=FULL``: an fsync per commit), alone: what acknowledging one event after
    its commit costs this machine at least, before any of glue's work."""
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        row = (b"x" * 400,)
        cpu = cpu_seconds()
        for _ in range(commits):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", row)
            db.execute("COMMIT")
        return (cpu_seconds() - cpu) / commits * 1e6
    finally:
        db.close()


async def daemon(
    rates: list[float], seconds: float, directory: pathlib.Path, synchronous: str
) -> tuple[dict[float, Measured], float]:
    """The daemon's CPU per event and receipt -> handler start latencies at each rate, and its CPU
    share while idle."""
    port = free_port()
    config = daemon_settings(port, {"path": str(directory / "cost.db"), "synchronous": synchronous})
    glue = app.Daemon(config)
    await glue.start()
    found: dict[float, Measured] = {}
    first = 0
    try:
        await asyncio.sleep(1.0)  # start-up settles (client checks, first gauges)
        cpu = cpu_seconds()
        await asyncio.sleep(IDLE_SECONDS)
        idle = (cpu_seconds() - cpu) / IDLE_SECONDS
        for rate in rates:
            total = int(rate * seconds)
            PROBE.reset(total, steady_from=int(rate))
            answers = await paced(f"http://127.0.0.1:{port}/events", rate, seconds, first)
            first += total
            try:
                await asyncio.wait_for(PROBE.done.wait(), timeout=60)
            except TimeoutError:
                raise SystemExit(f"only {PROBE.count} of {total} events reached the handler") from None
            steady = total - PROBE.steady_from
            ms = [value * 1000 for value in PROBE.latencies[PROBE.steady_from :]]
            found[rate] = Measured(
                (cpu_seconds() - PROBE.steady_cpu) / steady * 1e6,
                percentile(ms, 0.5),
                percentile(ms, 0.99),
                answers,
            )
            await asyncio.sleep(1.0)  # the last outcomes settle before the next rate
    finally:
        await glue.stop()
    return found, idle


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate, the first one warm-up")
    parser.add_argument("--rates", default="100,1000,3000", help="events per second, comma-separated")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    baseline = await bare(rates, args.seconds)
    with tempfile.TemporaryDirectory(prefix="glue-cost-") as tmp:
        measured, idle = await daemon(rates, args.seconds, pathlib.Path(tmp), args.synchronous)
        commit = durable_commit(pathlib.Path(tmp))
    print(f"idle daemon: {idle * 100:.2f} % of a core")
    print(f"one durable commit alone (SQLite WAL, synchronous=FULL, one row): {commit:.0f} us CPU")
    for rate in rates:
        glue, base = measured[rate], baseline[rate]
        print(
            f"{rate:>6g}/s  glue: {glue.cpu_us:6.0f} us CPU/event, receipt -> handler start"
            f" p50={glue.p50_ms:.1f} ms p99={glue.p99_ms:.1f} ms  |  bare aiohttp: {base.cpu_us:4.0f} us"
            f" CPU/request  |  glue's answers: {glue.answers}"
        )
    figures = {rate: measured.get(rate, Measured(0.0)) for rate in (100.0, 1000.0, 3000.0)}
    print(
        f"cpu_us_100={figures[100.0].cpu_us:.0f} cpu_us_1000={figures[1000.0].cpu_us:.0f}"
        f" p99_ms_1000={figures[1000.0].p99_ms:.1f} p99_ms_3000={figures[3000.0].p99_ms:.1f}"
    )


if __name__ == "__main__":
    # Logs as in production (one JSON line per dispatch), rendered but written to /dev/null.
    import uvloop

    with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        observability.configure_logging(settings.Logging(format="json"), stream=devnull)
        runner.run(main())
