"""Ingest benchmark: bare aiohttp vs `glue run` (SQLite journal) under the same load generator.

Both servers run as subprocesses of this script, one after the other, and wrk drives each with the
same script (32 connections, unique CloudEvent ids so every request is a new event that glue journals
with an fsync'd group commit). Glue then keeps taking load until it has journaled 100,000 deliveries,
and its resident memory is read from /proc. Between the two, glue's HTTP intake over a journal that
answers at once (_glue_without_journal.py) shows how far the ratio could go if the journal cost
nothing.

    python bench/ingest.py [--duration 10] [--connections 32]

Needs wrk (Debian: apt-get install wrk). Last line:
    ratio=<glue/bare> p99_ms=<glue p99> rss_mb=<glue RSS after the run>
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None) is not None:  # an HTTP error answer: the server is up
                return
            time.sleep(0.05)
    raise SystemExit(f"server at {url} did not start")


@contextlib.contextmanager
def server(argv: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(ready_url)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(port: int, seconds: float, connections: int, run_id: str) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(HERE / "_load.lua"),
            f"http://127.0.0.1:{port}/events",
            "--",
            run_id,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise SystemExit(f"wrk printed no result:\n{out}")
    values = {k: float(v) for k, v in (item.split("=") for item in match.group(1).split())}
    values["rps"] = values["requests"] / (values["duration_us"] / 1e6)
    return values


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--total", type=int, default=100_000, help="deliveries before reading RSS")
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="SQLite journal mode"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/ingest needs wrk: apt-get install wrk")

    port = free_port()
    with server([sys.executable, str(HERE / "_bare_server.py"), str(port)], f"http://127.0.0.1:{port}/"):
        wrk(port, 2, args.connections, "bare-warm")
        bare = wrk(port, args.duration, args.connections, "bare")
    print(f"bare aiohttp: {bare['rps']:.0f} req/s p99 {bare['p99_us'] / 1000:.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "glue.yaml"
        port = free_port()
        # Production defaults: logging at info (one JSON line per delivery, to /dev/null here).
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {port}, maxBacklog: 100000000}}\n"
            f"journal: {{path: {Path(tmp) / 'j.db'}, synchronous: {args.synchronous}}}\n"
            "logging: {level: info, format: json}\n"
            "endpoints: [{name: bench, path: /events, format: cloudevents}]\n"
        )
        helper = [sys.executable, str(HERE / "_glue_without_journal.py"), str(config)]
        with server(helper, f"http://127.0.0.1:{port}/readyz"):
            wrk(port, 2, args.connections, "free-warm")
            free = wrk(port, args.duration, args.connections, "free")
        print(
            f"glue intake over a journal that answers at once: {free['rps']:.0f} req/s "
            f"({free['rps'] / bare['rps']:.2f} of bare, the ceiling of the ratio)"
        )
        argv = [sys.executable, "-m", "glue.cli", "run", "--config", str(config)]
        with server(argv, f"http://127.0.0.1:{port}/readyz") as glue:
            wrk(port, 2, args.connections, "glue-warm")
            measured = wrk(port, args.duration, args.connections, "glue")
            done = measured["requests"]
            extra = 0
            while done < args.total:
                extra += 1
                more = wrk(
                    port,
                    max(2.0, (args.total - done) / measured["rps"] + 1),
                    args.connections,
                    f"more{extra}",
                )
                done += more["requests"]
            memory = rss_mb(glue.pid)
    print(
        f"glue (sqlite): {measured['rps']:.0f} req/s p50 {measured['p50_us'] / 1000:.1f} ms "
        f"p99 {measured['p99_us'] / 1000:.1f} ms non-2xx {measured['non2xx']:.0f}; "
        f"RSS {memory:.0f} MB after {done:.0f} deliveries"
    )
    ratio = measured["rps"] / bare["rps"]
    print(f"ratio={ratio:.2f} p99_ms={measured['p99_us'] / 1000:.1f} rss_mb={memory:.0f}")


if __name__ == "__main__":
    main()
