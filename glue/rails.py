"""Safety rails of a route, as the config writes them, and the time arithmetic they need.

A rail never drops an invocation: what it stops waits in the journal (state ``held`` with a reason, or
``awaiting-approval``) and runs when the rail lifts. This module holds only what needs no journal and
no event: the settings models (``budget``, ``breaker``, ``window``/``blackout``, ``approval``), durations
as the config writes them (``30s``, ``10m``, ``1h``, ``1d``) and whether a cron window is open. The gates
that apply them at dispatch are :mod:`glue.execution.gates`; templates and CEL in them are compiled by
:mod:`glue.routing`, the one module that compiles expressions.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from typing import Annotated, Any

import cronsim
import pydantic
from pydantic.alias_generators import to_camel

__all__ = [
    "FOREVER",
    "GLOBAL",
    "Approval",
    "Breaker",
    "Budget",
    "Duration",
    "Window",
    "one_or_list",
    "parse_duration",
]

#: The rails row that stops every route (``glue pause --all``).
GLOBAL = "*"
#: The due time of an invocation held without an end (a pause without ``--for``): 9999-12-31, a time
#: every tool can print, unlike infinity.
FOREVER = 253402300799.0

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``90s``, ``30m``, ``1h``, ``7d``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a duration (write e.g. 30s, 10m, 1h, 1d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (write e.g. 30s, 10m, 1h, 1d)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def one_or_list(value: Any) -> Any:
    """A field that takes one mapping or a list of them, as a list (so errors name ``budget.0.max``)."""
    return [value] if isinstance(value, dict) else value


#: A duration field: seconds, written as a number or with a unit.
Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Budget(_Model):
    """At most ``max`` starts per rendered ``key`` in any sliding window of ``per`` (no key: the route's
    starts altogether). Beyond, an invocation is held (reason ``budget``) until the window frees room."""

    max: int = pydantic.Field(ge=1, description="Starts allowed per key in any window of `per`.")
    per: Duration = pydantic.Field(description="The sliding window, e.g. 1h.")
    key: str | None = pydantic.Field(default=None, description="Template; omitted: one budget for the route.")


class Breaker(_Model):
    """After ``failures`` failed attempts within ``within`` the route opens (reason ``breaker``); after
    ``cooldown`` one invocation probes: success closes it, failure opens it again."""

    failures: int = pydantic.Field(ge=1)
    within: Duration
    cooldown: Duration


class Window(_Model):
    """Times starting at each ``cron`` fire time and lasting ``duration``, in ``timezone``: allowed
    (``window``) or forbidden (``blackout``)."""

    cron: str
    duration: Duration
    timezone: str = "UTC"

    @pydantic.field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            cronsim.CronSim(value, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
        except cronsim.CronSimError as exc:
            raise ValueError(f"not a cron expression: {exc}") from None
        return value

    @pydantic.field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    def _after(self, instant: float) -> float:
        """The first fire time strictly after ``instant`` (epoch seconds)."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        start = datetime.datetime.fromtimestamp(instant, zone)
        return next(cronsim.CronSim(self.cron, start)).timestamp()

    def open_at(self, now: float) -> float | None:
        """If a window is open at ``now``, when it closes; else None."""
        # The last fire time at or before now is the first one after (now - duration), if <= now.
        began = self._after(now - self.duration - 1e-6)
        return began + self.duration if began <= now else None

    def next_open(self, now: float) -> float:
        """When the next window opens (``now`` itself when one is open)."""
        return now if self.open_at(now) is not None else self._after(now)


class Approval(_Model):
    """Invocations for which ``when`` (CEL over the event, default true) holds wait in state
    ``awaiting-approval`` with their dry-run plan; ``glue approve`` runs one, ``glue deny`` and the
    ``ttl`` dead-letter it."""

    when: str = pydantic.Field(default="true", min_length=1, description="CEL; must yield a bool.")
    ttl: Duration = 86400.0
