"""glue's HTTP intake over a journal that answers at once: the ceiling of bench/ingest's ratio.

The same endpoint handler, decoder, metrics, log line and answer as `glue run`, with a journal whose
append returns at once (nothing is written, routed or made durable). Whatever glue's journal costs,
`glue run` cannot go faster than this.

    python bench/_glue_without_journal.py CONFIG
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import uvloop

from glue import events, journal, observability, pipeline, settings
from glue.sources import http


class AnswersAtOnce:
    """The part of the journal protocol that intake and the HTTP source call."""

    def __init__(self) -> None:
        self.seq = 0

    async def append(
        self, delivery: events.Delivery, batch: Sequence[events.CloudEvent], routing: object = None
    ) -> list[journal.Appended]:
        appended = []
        for event in batch:
            self.seq += 1
            appended.append(journal.Appended(events.identity(event), event.get_id(), True, self.seq))
        return appended

    async def backlog(self) -> int:
        return 0

    async def ping(self) -> None:
        return None


async def main(config: str) -> None:
    loaded = settings.load(config)
    observability.configure_logging(loaded.logging)
    store = AnswersAtOnce()
    intake_ = pipeline.make_intake(store, max_backlog=loaded.server.max_backlog)  # type: ignore[arg-type]
    source = http.HttpSource(loaded, intake_, store)  # type: ignore[arg-type]
    await source.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
