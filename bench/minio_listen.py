"""MinIO listen benchmark: records per second from a ListenBucketNotification stream into the journal.

A loopback server streams N distinct object-created records (MinIO's documented line format, with a
keep-alive line every 100 records) to glue's listen source, which decodes each line and journals it in
the SQLite journal (fsync'd group commit). The clock runs from the first byte to the last event
committed.

    python bench/minio_listen.py [--records 5000]

Last line:  records_per_s=<n> records=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glue import journal, pipeline
from glue import settings as settings_mod
from glue.sources import minio_listen
from tests.sources.minio_listen.listen_double import record


async def main(count: int) -> None:
    lines = [
        orjson.dumps({"Records": [record("bench", f"models/m{i}.bin", sequencer=f"{i:016X}")]}) + b"\n"
        for i in range(count)
    ]
    started: list[float] = []

    async def listen(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        started.append(time.perf_counter())
        for index, line in enumerate(lines):
            await response.write(line)
            if index % 100 == 99:
                await response.write(b'{"Records":null}\n')
        while True:
            await asyncio.sleep(1)
            await response.write(b'{"Records":null}\n')

    app = web.Application()
    app.router.add_get("/{bucket}", listen)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        store = journal.create(settings_mod.Journal(path=Path(tmp) / "bench.db"))
        await store.open()
        accepting = pipeline.make_intake(store, max_backlog=10 * count)
        await accepting.start()
        config = settings_mod.Minio.model_validate(
            {"endpoint": f"127.0.0.1:{port}", "secure": False, "buckets": [{"name": "bench"}]}
        )
        source = minio_listen.ListenSource(config, accepting.accept)
        await source.start()
        while await store.backlog() < count:  # noqa: ASYNC110 (the journal has no "count reached" event)
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started[0]
        await source.stop()
        await accepting.stop()
        await store.close()
    await runner.cleanup()
    print(f"records_per_s={count / elapsed:.0f} records={count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=5000)
    asyncio.run(main(parser.parse_args().records))
