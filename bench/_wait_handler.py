"""Benchmark handler plugin: ``bench.wait`` waits like an API call (I/O bound) and logs each call.

Every call appends its idempotency key to ``$BENCH_CALLS_DIR/<pid>``, so the benchmark can check
that no invocation was handled twice across replicas.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pydantic

import glue


class WaitParams(glue.Params):
    wait_ms: float = pydantic.Field(default=20, alias="waitMs")


@glue.handler("bench.wait", params=WaitParams)
async def wait(*, params: WaitParams, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Wait waitMs, then record the call."""
    if ctx.dry_run:
        return glue.Plan(summary=f"wait {params.wait_ms} ms")
    await asyncio.sleep(params.wait_ms / 1000)
    with open(os.path.join(os.environ["BENCH_CALLS_DIR"], str(os.getpid())), "a") as calls:  # noqa: ASYNC230
        calls.write(ctx.idempotency_key + "\n")
    return None
