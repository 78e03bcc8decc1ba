"""How flow shaping would treat a sequence of events, without a journal: what ``glue replay --dry-run``
shows for a recording. It applies the rules of :mod:`glue.journal.shaping` and of the rate-limit gate
in the documented order (coalescing, then the concurrency group, then the rate limit) to the events
in the order and at the times they were received, taking every run as instantaneous: a handler's own
duration is not in a recording, so ``supersede`` ends only invocations that would wait (behind a
coalescing window or a rate limit), and ``cancel`` undoes the run before it with the cancel step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from glue import routing

__all__ = ["Arrival", "Shaped", "preview"]


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """One matched route's invocation of one event: its event id, when it arrived, the decision."""

    event_id: str
    at: float
    decision: routing.Decision


@dataclasses.dataclass(slots=True)
class Shaped:
    """What shaping makes of one arrival: ``runs`` (at ``start``, standing for ``events``),
    ``coalesced`` or ``superseded`` (``by`` the event whose invocation took its place); ``note``
    says it in words."""

    outcome: str
    note: str = ""
    start: float = 0.0
    by: str | None = None
    events: list[str] = dataclasses.field(default_factory=list)


def preview(router: routing.Router, arrivals: Sequence[Arrival]) -> list[Shaped]:
    """What shaping makes of each arrival (same order), by the routes' rules."""
    shaped = [Shaped("runs", start=a.at, events=[a.event_id]) for a in arrivals]
    _coalesce(router, arrivals, shaped)
    _rate_limit(router, arrivals, shaped)
    _groups(router, arrivals, shaped)
    for item, arrival in zip(shaped, arrivals, strict=True):
        if item.outcome == "runs" and not item.note:
            item.note = "runs" if len(item.events) == 1 else f"runs once for {len(item.events)} events"
        if item.outcome == "runs" and item.start > arrival.at:
            item.note += f", {item.start - arrival.at:g} s after it arrived"
    return shaped


def _coalesce(router: routing.Router, arrivals: Sequence[Arrival], shaped: list[Shaped]) -> None:
    open_: dict[str, tuple[int, float, float]] = {}  # key -> (index of the taker, opened at, closes at)
    for index, arrival in enumerate(arrivals):
        rule = router.by_name[arrival.decision.route].route.coalesce
        if rule is None or arrival.decision.coalesce_key is None:
            continue
        key = f"{arrival.decision.route} {arrival.decision.coalesce_key}"
        current = open_.get(key)
        if current is None or arrival.at > current[2]:  # the window closed: this one opens the next
            closes = min(arrival.at + rule.window, arrival.at + rule.longest)
            open_[key] = (index, arrival.at, closes)
            shaped[index].start = closes if rule.edge == "trailing" else arrival.at
            continue
        taker, opened, _ = current
        closes = min(arrival.at + rule.window, opened + rule.longest)
        if rule.edge == "leading":
            _absorb(shaped, arrivals, index, taker)
            open_[key] = (taker, opened, closes)
        else:
            _absorb(shaped, arrivals, taker, index)
            shaped[index].start = closes
            open_[key] = (index, opened, closes)


def _absorb(shaped: list[Shaped], arrivals: Sequence[Arrival], absorbed: int, taker: int) -> None:
    shaped[taker].events = sorted(
        [*shaped[taker].events, *shaped[absorbed].events], key=lambda e: _order(arrivals, e)
    )
    by, was = arrivals[taker].event_id, arrivals[absorbed].event_id
    shaped[absorbed] = Shaped("coalesced", by=by)
    for item in shaped:  # those it had absorbed are the taker's now
        if item.outcome == "coalesced" and item.by in (was, by):
            item.by, item.note = by, f"coalesced into the invocation of {by}"


def _order(arrivals: Sequence[Arrival], event_id: str) -> int:
    return next(i for i, a in enumerate(arrivals) if a.event_id == event_id)


def _rate_limit(router: routing.Router, arrivals: Sequence[Arrival], shaped: list[Shaped]) -> None:
    buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
    runs = sorted(
        (i for i, s in enumerate(shaped) if s.outcome == "runs"), key=lambda i: (shaped[i].start, i)
    )
    for index in runs:
        decision = arrivals[index].decision
        limit = router.by_name[decision.route].route.rate_limit
        if limit is None:
            continue
        key = decision.route if decision.rate_key is None else f"{decision.route} {decision.rate_key}"
        tokens, at = buckets.get(key, (float(limit.burst), shaped[index].start))
        start = max(shaped[index].start, at)
        tokens = min(float(limit.burst), tokens + (start - at) * limit.per_second)
        if tokens < 1.0:
            start += (1.0 - tokens) / limit.per_second
            tokens = 1.0
        buckets[key] = (tokens - 1.0, start)
        if start > shaped[index].start:
            shaped[index].note = "waits for a rate-limit token, then runs"
        shaped[index].start = start


def _groups(router: routing.Router, arrivals: Sequence[Arrival], shaped: list[Shaped]) -> None:
    last: dict[str, int] = {}  # group -> index of its latest invocation not ended
    for index, arrival in enumerate(arrivals):
        decision = arrival.decision
        compiled = router.by_name[decision.route]
        group = compiled.route.group
        if group is None or decision.ordering_key is None or shaped[index].outcome != "runs":
            continue
        key = f"{decision.route} {decision.ordering_key}"
        before = last.get(key)
        last[key] = index
        if before is None or group.on_conflict == "queue":
            continue
        earlier = shaped[before]
        waiting = earlier.start > arrival.at
        if waiting:
            shaped[before] = Shaped("superseded", f"superseded by the invocation of {arrival.event_id}")
            shaped[before].by = arrival.event_id
        elif group.on_conflict == "cancel" and compiled.handler.cancel is not None:
            earlier.note = (
                earlier.note or "runs"
            ) + f"; its cancel step runs when {arrival.event_id} arrives"
