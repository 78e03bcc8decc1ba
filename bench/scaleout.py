"""Scale-out benchmark (issue 9): PostgreSQL journal ingest, and dispatch with 3 replicas vs 1.

Ingest: bare aiohttp, `glue run` with the SQLite journal and `glue run` with the PostgreSQL journal,
under the same wrk load as bench/ingest.py (unique CloudEvent ids, every request a new journaled
event; the workers are off, so this is intake alone). The three run side by side and are driven in
turn, round after round; each ratio is the median of the rounds' ratios, so that the machine's speed,
which drifts by tens of percent over a minute on a shared host, does not decide it.

Dispatch: 1, then 3 `glue run` replicas on one PostgreSQL journal, each with the same per-replica
concurrency, routing every event to a handler that waits 20 ms (I/O bound, like an API call). Events
are appended straight into the journal; the rate is measured between 10% and 90% of the invocations
done. Each handler call is logged, and an invocation handled twice is counted.

The default per-replica concurrency is 2 so that one replica is bound by its handler's I/O, not by the
CPU: a dispatched invocation costs about 1.5 ms of replica CPU and 1 ms of PostgreSQL CPU, so on a
2-core machine three replicas at concurrency 8 (1200/s ideal) would need about 3 cores and the figure
would measure the core count rather than the coordination. Raise --concurrency on a bigger machine.

    python bench/scaleout.py [--duration 5] [--rounds 7] [--events 2000] [--concurrency 2]
                             [--wait-ms 20] [--only ingest|dispatch]

Needs wrk and the PostgreSQL server ($BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432);
a throwaway database is created and dropped. Last line:
    pg_ratio=<pg ingest/bare> scaleout=<3 replicas/1 replica>
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from pydantic import SecretStr

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import ingest  # noqa: E402  (bench/ingest.py: wrk driver and server helpers)

from glue import events, journal, settings  # noqa: E402

SERVER = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"glue_bench_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{SERVER}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{SERVER}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def schema(dsn: str) -> str:
    """A fresh schema in the bench database; returns a DSN that uses it."""
    name = f"s_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return f"{dsn}?search_path={name}"


def glue_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "glue.cli", "run", "--config", str(config)]


def measure_ingest(args: argparse.Namespace, tmp: Path, dsn: str) -> dict[str, float]:
    """Median over ``args.rounds`` rounds of each glue journal's rate over bare aiohttp's.

    The three servers run side by side (idle but for the one under load), and each round drives
    bare, SQLite and PostgreSQL in turn for ``args.duration`` seconds: a ratio compares runs seconds
    apart, so a slow drift of the machine's speed cancels out instead of deciding the figure."""
    servers: dict[str, tuple[list[str], int, str]] = {}
    port = ingest.free_port()
    servers["bare"] = ([sys.executable, str(HERE / "_bare_server.py"), str(port)], port, "/")
    backends = {
        "sqlite": f"{{backend: sqlite, path: {tmp / 'ingest.db'}}}",
        "postgres": f'{{backend: postgres, dsn: {{value: "{schema(dsn)}"}}}}',
    }
    for name, journal_config in backends.items():
        port = ingest.free_port()
        config = tmp / f"ingest-{name}.yaml"
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {port}, maxBacklog: 100000000}}\n"
            f"journal: {journal_config}\n"
            "execution: {enabled: false}\n"
            "logging: {level: warning}\n"
            "endpoints: [{name: bench, path: /events, format: cloudevents}]\n"
        )
        servers[name] = (glue_argv(config), port, "/readyz")
    ratios: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    with contextlib.ExitStack() as stack:
        for name, (argv, port, ready) in servers.items():
            stack.enter_context(ingest.server(argv, f"http://127.0.0.1:{port}{ready}"))
            ingest.wrk(port, 2, args.connections, f"{name}-warm")
        for round_no in range(1, args.rounds + 1):
            rates = {}
            line = []
            for name, (_, port, _) in servers.items():
                result = ingest.wrk(port, args.duration, args.connections, f"{name}-{round_no}")
                if result["non2xx"] or result["sockerr"]:
                    raise SystemExit(
                        f"{name}: {result['non2xx']:.0f} non-2xx, {result['sockerr']:.0f} socket errors"
                    )
                rates[name] = result["rps"]
                line.append(f"{name} {result['rps']:.0f} req/s (p99 {result['p99_us'] / 1000:.1f} ms)")
            for name in ratios:
                ratios[name].append(rates[name] / rates["bare"])
            print(f"round {round_no}: " + ", ".join(line) + f"; pg/bare {ratios['postgres'][-1]:.2f}")
    return {name: statistics.median(values) for name, values in ratios.items()}


async def feed_and_watch(dsn: str, count: int) -> tuple[float, float]:
    """Append ``count`` events; return (seconds from 10% to 90% done, total seconds)."""
    store = journal.create(settings.Journal(backend="postgres", dsn=settings.SecretRef(value=SecretStr(dsn))))
    await store.open()
    conn = await asyncpg.connect(dsn)
    try:
        start = time.monotonic()
        for offset in range(0, count, 500):
            batch = [
                events.CloudEvent(
                    {"id": f"e{i}", "source": "/bench", "type": "com.example.bench", "specversion": "1.0"}
                )
                for i in range(offset, min(count, offset + 500))
            ]
            await store.append(events.Delivery("http", "bench", "cloudevents", {}, b"{}"), batch)
        marks: dict[float, float] = {}
        while True:
            done = await conn.fetchval("SELECT count(*) FROM invocations WHERE state = 'done'")
            now = time.monotonic()
            for fraction in (0.1, 0.9):
                if fraction not in marks and done >= fraction * count:
                    marks[fraction] = now
            if done >= count:
                return marks[0.9] - marks[0.1], now - start
            if now - start > 600:
                raise SystemExit(f"dispatch stalled at {done}/{count}")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
        await store.close()


def measure_dispatch(args: argparse.Namespace, tmp: Path, dsn: str, replicas: int) -> tuple[float, int]:
    """Invocations per second with ``replicas`` replicas, and how many were handled more than once."""
    run_dsn = schema(dsn)
    calls = tmp / f"calls-{replicas}"
    calls.mkdir()
    config = tmp / f"dispatch-{replicas}.yaml"
    config.write_text(
        "server: {host: 127.0.0.1}\n"
        f'journal: {{backend: postgres, dsn: {{value: "{run_dsn}"}}}}\n'
        f"execution: {{concurrency: {args.concurrency}, pollSeconds: 0.05}}\n"
        "logging: {level: warning}\n"
        "plugins: [_wait_handler]\n"
        f"routes: [{{name: wait, handler: bench.wait, params: {{waitMs: {args.wait_ms}}}}}]\n"
    )
    env = {
        **os.environ,
        "BENCH_CALLS_DIR": str(calls),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
    }
    with contextlib.ExitStack() as stack:
        for _ in range(replicas):
            port = ingest.free_port()
            process = subprocess.Popen(
                glue_argv(config),
                env={**env, "GLUE_SERVER__PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(_stop, process)
            ingest.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=60)
        middle, total = asyncio.run(feed_and_watch(run_dsn, args.events))
    seen = collections.Counter(line for path in calls.iterdir() for line in path.read_text().splitlines())
    twice = sum(1 for n in seen.values() if n > 1)
    rate = 0.8 * args.events / middle
    print(
        f"dispatch, {replicas} replica{'s' if replicas > 1 else ' '}: {rate:7.0f} invocations/s"
        f" ({args.events} in {total:.1f} s; {len(seen)} handled, {twice} more than once)"
    )
    return rate, twice


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5, help="seconds of wrk load per ingest run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="ingest rounds; the ratios are medians")
    parser.add_argument("--events", type=int, default=2000, help="events per dispatch run")
    parser.add_argument("--concurrency", type=int, default=2, help="invocations in flight per replica")
    parser.add_argument("--wait-ms", type=float, default=20, help="how long the handler waits")
    parser.add_argument("--only", choices=["ingest", "dispatch"], help="run one half (its figure only)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/scaleout needs wrk: apt-get install wrk")

    pg_ratio = scaleout = "-"
    with tempfile.TemporaryDirectory() as name, database() as dsn:
        tmp = Path(name)
        if args.only != "dispatch":
            ratios = measure_ingest(args, tmp, dsn)
            pg_ratio = f"{ratios['postgres']:.2f}"
            print(f"sqlite_ratio={ratios['sqlite']:.2f} (medians over {args.rounds} rounds)")
        if args.only != "ingest":
            one, twice_one = measure_dispatch(args, tmp, dsn, 1)
            three, twice_three = measure_dispatch(args, tmp, dsn, 3)
            scaleout = f"{three / one:.2f}"
            print(f"handled_twice={twice_one + twice_three}")
    print(f"pg_ratio={pg_ratio} scaleout={scaleout}")


if __name__ == "__main__":
    main()
