"""System calls per event at 100 events/s (issue 23), by call and by thread of the daemon.

On a virtual machine a system call costs tens of microseconds, so at low rates, where nothing batches,
an event costs about what its system calls cost. Unlike CPU time, their count does not depend on the
machine's load: two versions of glue compare by it.

The real daemon (as in bench/cost.py: HTTP intake, SQLite journal with its default durability, the
executor, one route to a no-op handler) runs in a child process; ``strace -f`` follows it (and only it:
the sender is another child of this script) through a run of ``--small`` events and one of ``--large``
events at ``--rate``, each followed by the same quiet tail. The difference between the two runs,
divided by the difference in events, is what one event costs, start-up and tails left out. The idle
daemon's own wake-ups over the extra seconds of the longer run are counted in: measured alone, over
the same time, they are printed too.

    python bench/syscalls.py [--rate 100] [--small 100] [--large 600] [--trace DIR]

``--trace DIR`` keeps the traces (``DIR/small``, ``DIR/large``, ``DIR/idle``; one line per call, with
the thread id and time) for reading what one event does. Needs strace. Last line
``syscalls_per_event=<n> pwrite64=<n> fcntl=<n> getpid=<n> futex=<n> epoll_pwait=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import collections
import contextlib
import os
import pathlib
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _paced import PROBE, daemon_settings, free_port

TAIL_SECONDS = 2.0
#: A WAL frame header: 24 bytes, the page number first.
_FRAME = re.compile(r'pwrite64\(\d+, "((?:[^"\\]|\\.)*)", 24, \d+\)')
_CALL = re.compile(r"^(\d+)\s+(?:\d+:\d+:\d+\.\d+\s+)?([a-z_0-9]+)\(")


async def serve(port: int, path: str) -> None:
    """The daemon (in the child): prints ``ready``, then answers each line on stdin with the handler's
    count; stops at the end of stdin."""
    from glue import app

    config = daemon_settings(port, {"path": path})
    glue = app.Daemon(config)
    await glue.start()
    loop = asyncio.get_running_loop()
    try:
        print("ready", flush=True)
        while await loop.run_in_executor(None, sys.stdin.readline):
            names = " ".join(f"{thread.native_id}:{thread.name}" for thread in threading.enumerate())
            print(PROBE.count, names, flush=True)
    finally:
        await glue.stop()


def traced(pid: int, out: pathlib.Path, body: subprocess.Popen[bytes] | float) -> None:
    """Trace ``pid`` (all its threads) into ``out`` while ``body`` runs (a process, or seconds)."""
    strace = subprocess.Popen(
        ["strace", "-f", "-qq", "-tt", "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL
    )
    time.sleep(1.0)  # attached to every thread
    if isinstance(body, float):
        time.sleep(body)
    else:
        body.wait()
    time.sleep(TAIL_SECONDS)
    strace.send_signal(signal.SIGINT)
    strace.wait()


def counts(trace: pathlib.Path, names: dict[int, str]) -> collections.Counter[tuple[str, str]]:
    """Calls in ``trace`` by (thread name, call); a call that blocked counts once."""
    found: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in trace.read_text().splitlines():
        match = _CALL.match(line)
        if match:
            thread = re.sub(r"_\d+$", "", names.get(int(match.group(1)), "?"))
            found[thread, match.group(2)] += 1
    return found


def frames(trace: pathlib.Path, journal: pathlib.Path) -> tuple[int, collections.Counter[str]]:
    """Commits in ``trace`` and the WAL frames they wrote, by table or index (the frame header's page
    number, looked up in SQLite's dbstat of the journal afterwards)."""
    with contextlib.closing(sqlite3.connect(journal)) as db:
        owner = dict((page, name) for name, page in db.execute("SELECT name, pageno FROM dbstat"))
    commits, found = 0, collections.Counter[str]()
    for line in trace.read_text().splitlines():
        match = _FRAME.search(line)
        if match:
            header = codecs.escape_decode(match.group(1).encode())[0]
            page = int.from_bytes(header[:4], "big")
            found[owner.get(page, "(a page since freed)")] += 1
            commits += int.from_bytes(header[4:8], "big") != 0  # a commit's last frame says its size
    return commits, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=600)
    parser.add_argument("--trace", type=pathlib.Path, help="keep the traces here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="glue-syscalls-") as tmp:
        keep = args.trace or pathlib.Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        port = free_port()
        daemon = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(keep / "journal.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert daemon.stdin is not None and daemon.stdout is not None
        if daemon.stdout.readline().strip() != "ready":
            raise SystemExit("the daemon did not start")
        url = f"http://127.0.0.1:{port}/events"
        sender = str(pathlib.Path(__file__).resolve().parent / "_paced.py")
        first, runs = 0, {}
        time.sleep(2.0)  # start-up settles
        for name, total in (("small", args.small), ("large", args.large)):
            send = [sys.executable, sender, url, str(args.rate), str(total / args.rate), str(first)]
            traced(daemon.pid, keep / name, subprocess.Popen(send, stdout=subprocess.DEVNULL))
            first += total
            daemon.stdin.write("count\n")
            daemon.stdin.flush()
            handled, *named = daemon.stdout.readline().split()
            names = dict((int(tid), name) for tid, name in (item.split(":", 1) for item in named))
            if int(handled) != first:
                raise SystemExit(f"{name}: {handled} of {first} events so far reached the handler")
            runs[name] = counts(keep / name, names)
        extra = (args.large - args.small) / args.rate
        traced(daemon.pid, keep / "idle", extra)
        idle = counts(keep / "idle", names)
        daemon.stdin.close()
        daemon.wait()
        commits = {name: frames(keep / name, keep / "journal.db") for name in runs}
    events = args.large - args.small
    per = {key: (runs["large"][key] - runs["small"][key]) / events for key in runs["large"] | runs["small"]}
    print(f"per event at {args.rate:g}/s ({args.large} events less {args.small}), by thread and call:")
    for (thread, call), value in sorted(per.items(), key=lambda item: -item[1]):
        if abs(value) >= 0.05:
            print(f"  {thread:<16} {call:<16} {value:6.2f}")
    by_call: collections.defaultdict[str, float] = collections.defaultdict(float)
    for (_, call), value in per.items():
        by_call[call] += value
    idle_total = sum(idle.values()) / events
    print(f"of which the idle daemon's own over {extra:g} s: {idle_total:.2f} per event")
    print(f"  {', '.join(f'{t}/{c} {v / events:.2f}' for (t, c), v in idle.most_common(6))}")
    pages = commits["large"][1] - commits["small"][1]
    pages.update({name: 0 for name in commits["small"][1]})
    done = commits["large"][0] - commits["small"][0]
    print(f"commits per event {done / events:.2f}; WAL frames per commit, by table or index:")
    for name, value in sorted(pages.items(), key=lambda item: -item[1]):
        print(f"  {name:<32} {value / done:5.2f}")
    print(f"  {'(all)':<32} {sum(pages.values()) / done:5.2f}")
    total = sum(per.values())
    shown = " ".join(
        f"{call}={by_call[call]:.1f}" for call in ("pwrite64", "fcntl", "getpid", "futex", "epoll_pwait")
    )
    print(f"syscalls_per_event={total:.1f} {shown}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        import uvloop

        from glue import observability, settings

        with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            observability.configure_logging(settings.Logging(format="json"), stream=devnull)
            runner.run(serve(int(sys.argv[2]), sys.argv[3]))
    else:
        main()
