"""Soak: a million events through intake to a no-op handler in one run, with retention pruning meanwhile.

The real daemon runs in this process (SQLite journal, executor, retention; its HTTP listener is up
but idle): deliveries enter through the daemon's own intake (``Intake.accept``, the path every source
calls after decoding its transport), not over HTTP, which at these counts would measure the sender more
than glue. At most ``--window`` events are accepted and not yet handled at any time (the sender waits
for the handler, as a producer waits on 503s), so the journal holds what retention keeps, not a
growing backlog. ``journal.retentionDays`` is set to ``--retention`` seconds so pruning runs every few
seconds during the run.

Sampled every ``--every`` events: resident memory (VmRSS), CPU time (user + system, all threads), the
journal's files (database + WAL). Reported:

- ``rss_mb_max``: the largest sample;
- ``rss_drift_pct``: the mean of the samples in the last tenth of the run against those at 50-60 %
  (flat over the second half: near 0);
- CPU microseconds per event in each tenth, the second tenth (after warm-up) as the baseline of the same
  run, and the last tenth's drift against it;
- ``journal_mb``: the largest size of the journal's files over the second half, and its size at the end.

    python bench/soak.py [--events 1000000] [--retention 20] [--window 20000] [--loop uvloop|asyncio]

Last line: ``events=<n> rss_mb_max=<n> rss_drift_pct=<n> journal_mb=<n>`` (targets: RSS under 150 MB,
flat over the second half; journal bounded by retention).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import glue
from glue import app, events, observability, settings


class Counter:
    """How many events the no-op handler saw; wakes the sender when the window has room."""

    def __init__(self) -> None:
        self.count = 0
        self.room = asyncio.Event()
        self.until = 0

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.until:
            self.room.set()


COUNTER = Counter()


@glue.handler("bench.soak-noop")
async def noop(**_: Any) -> None:
    """Does nothing; counts."""
    COUNTER.hit()


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def journal_mb(path: pathlib.Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total / 1e6


def delivery(index: int) -> events.Delivery:
    """A structured CloudEvent of a few hundred bytes, as a webhook would bring it."""
    event = events.CloudEvent(
        {
            "id": f"soak-{index}",
            "source": "/soak",
            "type": "com.example.soak",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        {"n": index, "repository": {"name": f"repo-{index % 100}", "tag": f"v{index % 1000}"}},
    )
    body = events.to_json(event)
    return events.Delivery(
        "http", "soak", "cloudevents", {"content-type": "application/cloudevents+json"}, body
    )


class Sample:
    __slots__ = ("at", "cpu", "events", "journal", "rss")

    def __init__(self, events_: int, at: float, cpu: float, rss: float, journal: float) -> None:
        self.events, self.at, self.cpu, self.rss, self.journal = events_, at, cpu, rss, journal


async def soak(
    total: int, retention: float, window: int, every: int, directory: pathlib.Path
) -> list[Sample]:
    db = directory / "soak.db"
    config = settings.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "journal": {"path": str(db), "retentionDays": retention / 86400},
            "endpoints": [{"name": "soak", "path": "/events", "format": "cloudevents"}],
            "routes": [{"name": "soak", "handler": "bench.soak-noop"}],
            "execution": {"concurrency": 256, "batch": 500, "pollSeconds": 0.05},
        },
        "bench",
    )
    daemon = app.Daemon(config)
    await daemon.start()
    assert daemon.pipeline is not None
    intake = daemon.pipeline.intake
    samples = [Sample(0, time.perf_counter(), cpu_seconds(), rss_mb(), journal_mb(db))]
    sent = 0
    refused = 0
    try:
        while sent < total:
            if sent - COUNTER.count >= window:  # wait for the handler to catch up half the window
                COUNTER.until = sent - window // 2
                COUNTER.room.clear()
                await COUNTER.room.wait()
            chunk = min(500, total - sent)
            results = await asyncio.gather(
                *(intake.accept(delivery(i)) for i in range(sent, sent + chunk)), return_exceptions=True
            )
            failed = sum(1 for r in results if isinstance(r, BaseException))
            if failed:  # 503 to a sender: it sends the same events again later
                refused += failed
                await asyncio.sleep(0.05)
                continue
            sent += chunk
            if sent % every == 0:
                samples.append(Sample(sent, time.perf_counter(), cpu_seconds(), rss_mb(), journal_mb(db)))
                last, before = samples[-1], samples[-2]
                rate = (last.events - before.events) / (last.at - before.at)
                print(
                    f"{sent:>9} events  rss {last.rss:6.1f} MB  journal {last.journal:6.1f} MB"
                    f"  handled {COUNTER.count}  {rate:,.0f}/s",
                    file=sys.stderr,
                    flush=True,
                )
        COUNTER.until = total
        if COUNTER.count < total:
            COUNTER.room.clear()
            await asyncio.wait_for(COUNTER.room.wait(), timeout=120)
        # The last sample once every event is handled, before the daemon stops (its drain and the
        # journal's last checkpoint are no event's cost).
        samples.append(Sample(total, time.perf_counter(), cpu_seconds(), rss_mb(), journal_mb(db)))
    finally:
        await daemon.stop()
    if refused:
        print(f"{refused} accepts refused (journal unavailable or backlog) and sent again", file=sys.stderr)
    return samples


def report(samples: list[Sample], total: int) -> None:
    tenths: list[list[Sample]] = [[] for _ in range(10)]
    for sample in samples[1:]:
        tenths[min(9, (sample.events - 1) * 10 // total)].append(sample)
    cpu_per_event: list[float] = []
    previous = samples[0]
    for tenth in tenths:
        if not tenth:
            cpu_per_event.append(float("nan"))
            continue
        last = tenth[-1]
        cpu_per_event.append((last.cpu - previous.cpu) / max(1, last.events - previous.events) * 1e6)
        previous = last
    baseline, final = cpu_per_event[1], cpu_per_event[-1]
    print("CPU us per event by tenth: " + " ".join(f"{value:.0f}" for value in cpu_per_event))
    print(
        f"cpu_us_per_event baseline (2nd tenth)={baseline:.0f} last tenth={final:.0f}"
        f" drift={(final - baseline) / baseline * 100:+.1f}%"
    )
    mid = [s.rss for s in samples if 0.5 * total <= s.events <= 0.6 * total]
    end = [s.rss for s in samples if s.events > 0.9 * total]
    drift = (statistics.mean(end) - statistics.mean(mid)) / statistics.mean(mid) * 100
    second_half = [s.journal for s in samples if s.events >= total / 2]
    rss_max = max(s.rss for s in samples)
    elapsed = samples[-1].at - samples[0].at
    print(
        f"{total} events in {elapsed:.0f} s ({total / elapsed:,.0f}/s); RSS max {rss_max:.1f} MB,"
        f" second half {min(s.rss for s in samples if s.events >= total / 2):.1f}-{max(mid + end):.1f} MB;"
        f" journal second half max {max(second_half):.1f} MB, at the end {samples[-1].journal:.1f} MB"
    )
    print(
        f"events={total} rss_mb_max={rss_max:.0f} rss_drift_pct={drift:.1f} journal_mb={max(second_half):.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--retention", type=float, default=20.0, help="seconds finished work is kept")
    parser.add_argument("--window", type=int, default=20_000, help="events accepted and not yet handled")
    parser.add_argument("--every", type=int, default=10_000, help="events between samples")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop")
    args = parser.parse_args()
    if args.events % args.every or args.every % 500:
        raise SystemExit("--events must be a multiple of --every, and --every of 500")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="glue-soak-") as tmp:
        samples = await soak(args.events, args.retention, args.window, args.every, pathlib.Path(tmp))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report(samples, args.events)


if __name__ == "__main__":
    # Logs as in production (JSON lines), rendered but written to /dev/null.
    loop_factory = None
    if "--loop" not in sys.argv or sys.argv[sys.argv.index("--loop") + 1 :][:1] != ["asyncio"]:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with open(os.devnull, "w") as devnull, asyncio.Runner(loop_factory=loop_factory) as runner:
        observability.configure_logging(settings.Logging(format="json"), stream=devnull)
        runner.run(main())
