"""A test handler plugin: ``test.gated`` fails for good (dead-lettered at once) until its gate file
exists, then succeeds; what a retry from the console's dead-letter page needs to be seen done."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import glue


class GatedParams(glue.Params):
    gate: str


@glue.handler("test.gated", params=GatedParams)
async def gated(*, params: GatedParams, ctx: glue.Context, **kwargs: Any) -> glue.Plan | None:
    """Succeeds once ``params.gate`` exists."""
    if ctx.dry_run:
        return glue.Plan(summary=f"wait for {params.gate}")
    if not await asyncio.to_thread(Path(params.gate).exists):
        raise glue.PermanentError(f"gate {params.gate} is closed")
    return None
