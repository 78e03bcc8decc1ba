"""Instructions per request, counted by valgrind's callgrind: bare aiohttp, and glue's HTTP intake over
a journal that answers at once, over SQLite and over PostgreSQL; and over SQLite with tracing on.

On a shared machine rates swing by tens of percent within a minute; the instructions a process runs do
not. Each server runs under callgrind; wrk warms it up, its counters are zeroed, wrk drives it for
--duration seconds (32 connections, the load of bench/ingest.py), and the counters are dumped:
instructions divided by the requests answered. Use it to compare two versions of glue. It is not a
rate: the kernel's share (socket reads and writes, fsync) is not counted, and under valgrind a server
runs about fifty times slower, so the journal's groups form differently than at full speed.

    python bench/instructions.py [--duration 20] [--only bare,free,sqlite,postgres]
                                 (also bare-uvloop: bare aiohttp on the loop glue runs on;
                                  traced: sqlite with every delivery traced, the sampler always on,
                                  its spans exported over OTLP/HTTP to a local receiver)

Needs valgrind and wrk, and for postgres the server of bench/scaleout.py. Last line:
    bare=<Ir/request> free=<Ir/request> sqlite=<Ir/request> postgres=<Ir/request> [traced=<Ir/request>]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ingest  # noqa: E402  (wrk driver and server helpers)
import scaleout  # noqa: E402  (throwaway PostgreSQL database and schema)

SERVERS = ("bare", "bare-uvloop", "free", "sqlite", "postgres", "traced")
DEFAULT = ("bare", "free", "sqlite", "postgres")


def glue_config(tmp: Path, name: str, port: int, dsn: str | None, otlp: int | None = None) -> Path:
    """The config of a glue server; ``otlp``: the port of the trace receiver (tracing on, every
    delivery sampled)."""
    journal = (
        f'{{backend: postgres, dsn: {{value: "{scaleout.schema(dsn)}"}}}}'
        if name == "postgres" and dsn is not None
        else f"{{backend: sqlite, path: {tmp / f'{name}.db'}}}"
    )
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, maxBacklog: 100000000}}\n"
        f"journal: {journal}\n"
        "execution: {enabled: false}\n"
        "logging: {level: warning}\n"
        "endpoints: [{name: bench, path: /events, format: cloudevents}]\n"
    )
    if otlp is not None:
        with config.open("a") as file:
            file.write(f"tracing: {{endpoint: 'http://127.0.0.1:{otlp}', sampler: always_on}}\n")
    return config


def count(name: str, argv: list[str], port: int, ready: str, duration: float, tmp: Path) -> int:
    """Instructions per answered request of the server ``argv`` runs."""
    out = tmp / f"callgrind.{name}"
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ingest.wait_ready(f"http://127.0.0.1:{port}{ready}", timeout=300)
        ingest.wrk(port, 5, 32, f"{name}-warm")
        subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
        result = ingest.wrk(port, duration, 32, f"{name}-measured")
        subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
    finally:
        process.terminate()
        process.wait(120)
    dumps = sorted(tmp.glob(f"callgrind.{name}.*"))  # the dump asked for (the exit writes another)
    summary = re.search(r"^summary: (\d+)$", dumps[0].read_text(), re.M) if dumps else None
    if summary is None:
        raise SystemExit(f"{name}: callgrind wrote no dump")
    return int(summary.group(1)) // max(1, int(result["requests"]))


@contextlib.contextmanager
def otlp_sink() -> Iterator[int]:
    """A local OTLP/HTTP receiver (bench/_otlp_sink.py, not under callgrind); yields its port."""
    port = ingest.free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "_otlp_sink.py"), str(port)])
    try:
        ingest.wait_ready(f"http://127.0.0.1:{port}/", timeout=60)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20, help="seconds of measured load per server")
    parser.add_argument("--only", default=",".join(DEFAULT), help="comma-separated: " + ",".join(SERVERS))
    args = parser.parse_args()
    chosen = [name for name in args.only.split(",") if name]
    if unknown := set(chosen) - set(SERVERS):
        raise SystemExit(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}")
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/instructions needs {tool} (Debian: apt-get install valgrind wrk)")

    figures: dict[str, int] = {}
    database = scaleout.database() if "postgres" in chosen else contextlib.nullcontext(None)
    with tempfile.TemporaryDirectory() as name, database as dsn, contextlib.ExitStack() as sinks:
        tmp = Path(name)
        for server in chosen:
            port = ingest.free_port()
            if server in ("bare", "bare-uvloop"):
                argv = [sys.executable, str(HERE / "_bare_server.py"), str(port)]
                argv, ready = argv + (["uvloop"] if server == "bare-uvloop" else []), "/"
            elif server == "free":
                config = glue_config(tmp, server, port, None)
                argv, ready = [sys.executable, str(HERE / "_glue_without_journal.py"), str(config)], "/readyz"
            elif server == "traced":
                config = glue_config(tmp, server, port, None, otlp=sinks.enter_context(otlp_sink()))
                argv, ready = scaleout.glue_argv(config), "/readyz"
            else:
                config = glue_config(tmp, server, port, dsn)
                argv, ready = scaleout.glue_argv(config), "/readyz"
            figures[server] = count(server, argv, port, ready, args.duration, tmp)
            print(f"{server:11} {figures[server]:9,} instructions per request")
    print(" ".join(f"{server}={value}" for server, value in figures.items()))


if __name__ == "__main__":
    main()
