"""The ``Retry-After`` header, as the outbound handlers honour it (a helper module: it registers nothing)."""

from __future__ import annotations

import datetime
import email.utils


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or HTTP-date, RFC 9110 10.2.3); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=datetime.UTC)
    return max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)
