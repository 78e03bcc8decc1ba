"""When to try again: the one exponential backoff and the one ``Retry-After`` parser.

The executor (a route's delivery policy), the MinIO listen source (reconnects) and the outbound
handlers (OpenBao, HTTP, Kubernetes) all wait the same way between attempts, and all read a server's
``Retry-After`` the same way. This module knows nothing else of glue, so anything can import it.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import math
import random

__all__ = ["Policy", "retry_after"]


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """Capped exponential backoff with jitter.

    Attempt ``n`` (1-based) waits ``initial * multiplier ** (n - 1)`` seconds, capped at ``max``, then
    spread by ``jitter`` (0.2: a uniformly random factor in [0.8, 1.2]) and capped again, so no delay
    is ever longer than ``max``.
    """

    initial: float
    multiplier: float
    max: float
    jitter: float

    @classmethod
    def equal_jitter(cls, initial: float, maximum: float) -> Policy:
        """Doubling steps ``min(initial * 2 ** (n - 1), maximum)``, each delay between half and all of
        its step: three quarters of it, spread by a third either way (uniform until the steps reach
        ``maximum``, where the cap also bounds the spread). For clients that must never wait longer
        than the step."""
        return cls(initial=initial * 0.75, multiplier=2.0, max=maximum, jitter=1 / 3)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); any attempt number is
        safe (far down the schedule the power overflows to the cap, not to an error)."""
        try:
            base = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            base = math.inf
        base = min(base, self.max)
        if self.jitter:
            base *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return min(base, self.max)


def retry_after(value: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value (RFC 9110 section 10.2.3).

    The value is delta-seconds (a non-negative integer) or an HTTP-date; a date already past means 0.
    None when there is no value or it is neither (a server's garbage never becomes a delay). ``now``
    (an aware datetime) is the moment the date is measured from, the current time by default.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=datetime.UTC)
    now = now if now is not None else datetime.datetime.now(datetime.UTC)
    return max((when - now).total_seconds(), 0.0)
