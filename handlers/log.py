"""``log``: write one structured log line per event. The simplest handler; useful to try routes."""

from __future__ import annotations

from typing import Any, Literal

import glue

__all__ = ["LogParams", "log_event"]


class LogParams(glue.Params):
    message: str = "event"
    level: Literal["debug", "info", "warning", "error"] = "info"
    fields: dict[str, Any] = {}


@glue.handler("log", params=LogParams)
async def log_event(*, event: Any, params: LogParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Log the event's type, source and id with a message and rendered fields."""
    line = {
        "type": event.get_type(),
        "source": event.get_source(),
        "subject": event.get_subject(),
        **params.fields,
    }
    if ctx.dry_run:
        return glue.Plan(
            [glue.Call("LOG", params.level, body={"message": params.message, **line})],
            summary=f"log {params.message!r}",
        )
    getattr(ctx.log, params.level)(params.message, **line)
    return None
