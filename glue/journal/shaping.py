"""Flow shaping as both journal backends apply it when they record routing: coalescing and the
concurrency groups' supersede and cancel, decided in the transaction that inserts the invocations, so
replicas and restarts see one decision.

The rules are written once, as generators of statements (:func:`shape`): each yields a
:class:`Query` and receives its result; a backend runs them on its own connection (SQLite
synchronously, PostgreSQL awaiting) and writes ``?`` placeholders its own way. Every statement is
idempotent, and only invocations the same transaction inserted are shaped (one recorded by an earlier
pass is left as that pass shaped it).

Order, for one new invocation (gates at routing, see the README):

1. coalescing: ``trailing``: the open (pending, not yet started) invocation of the key is ended
   ``coalesced``, taken by the new one, which runs after ``window`` of quiet, never later than
   ``maxWait`` after the first event of the window; ``leading``: the first runs at once and the new
   one, inside its window, ends ``coalesced``, taken by it.
2. concurrency group, for one that was not coalesced: ``supersede`` ends the older waiting ones
   ``superseded``; ``cancel`` also marks the running one taken (its owner cancels it) and, when the
   handler has a cancel step, puts the one that finished last back to pending to run that step.
   An invocation recorded after a newer one of its group (routed late) is itself superseded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from typing import Any, Literal

from glue.journal import records

__all__ = ["Query", "Shaping", "locks", "postgres_sql", "shape"]


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """One statement: ``row`` answers the first row (or None), ``count`` the rows changed."""

    sql: str
    args: tuple[Any, ...]
    want: Literal["row", "count"] = "count"


#: A generator of statements ending with what it shaped (see :data:`records.Shaped`).
Shaping = Generator[Query, Any, records.Shaped]


def postgres_sql(sql: str) -> str:
    """``?`` placeholders numbered for PostgreSQL (the statements here hold no other ``?``)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, start=1))


def locks(items: Sequence[records.NewInvocation]) -> list[str]:
    """The keys whose shaping must not interleave between replicas (PostgreSQL takes an advisory lock
    on each, in this order, before shaping)."""
    keys: set[str] = set()
    for item in items:
        if item.shaped:
            if item.coalesce is not None:
                keys.add(item.coalesce.key)
            if item.ordering_key is not None:
                keys.add(item.ordering_key)
    return sorted(keys)


_NEW = (
    "SELECT id, event_seq, coalesce_key, opened_at, state, attempt, created_at FROM invocations"
    " WHERE idempotency_key = ?"
)


def shape(item: records.NewInvocation, now: float) -> Shaping:
    """The statements that shape ``item`` (inserted already), and what they ended."""
    shaped: records.Shaped = []
    if not item.shaped:
        return shaped
    new = yield Query(_NEW, (item.idempotency_key,), "row")
    if new is None or new[4] != "pending" or new[5] != 0 or float(new[6]) != now:
        # not inserted by this transaction (it existed: an event routed again after some of its
        # routes had decided, whose invocations were shaped then), or shaped and started already
        return shaped
    new_id, seq = int(new[0]), int(new[1])
    if item.coalesce is not None and new[2] is None:  # coalesce_key is set once, when first shaped
        coalesced = yield from _coalesce(item, item.coalesce, new_id, seq, now, shaped)
        if coalesced:
            return shaped
    if item.conflict in ("supersede", "cancel") and item.ordering_key is not None:
        yield from _conflict(item, item.ordering_key, new_id, seq, now, shaped)
    return shaped


def _coalesce(
    item: records.NewInvocation,
    rule: records.Coalesce,
    new_id: int,
    seq: int,
    now: float,
    shaped: records.Shaped,
) -> Generator[Query, Any, bool]:
    """Apply coalescing; True when the new invocation itself ended ``coalesced``."""
    if rule.edge == "trailing":
        # the open invocation: waiting for its window, not yet started (a later attempt is a retry)
        open_ = yield Query(
            "SELECT id, event_seq, opened_at FROM invocations WHERE coalesce_key = ? AND state = 'pending'"
            " AND attempt = 0 AND taken_by IS NULL AND id != ? ORDER BY event_seq DESC LIMIT 1",
            (rule.key, new_id),
            "row",
        )
        if open_ is not None and int(open_[1]) > seq:  # routed after a later event: it joins that one
            yield from _absorb(new_id, int(open_[0]), now)
            shaped.append((item.route, "coalesced"))
            return True
        opened = float(open_[2]) if open_ is not None and open_[2] is not None else now
        due = min(now + rule.window, opened + rule.max_wait)
        yield Query(
            "UPDATE invocations SET coalesce_key = ?, opened_at = ?, window_until = ?, due_at = ?"
            " WHERE id = ?",
            (rule.key, opened, due, due, new_id),
        )
        if open_ is not None:
            yield from _absorb(int(open_[0]), new_id, now)
            shaped.append((item.route, "coalesced"))
        return False
    # leading: an invocation whose window is still open takes the new one
    open_ = yield Query(
        "SELECT id, opened_at FROM invocations WHERE coalesce_key = ? AND window_until >= ?"
        " AND state NOT IN ('coalesced', 'superseded') AND id != ? ORDER BY event_seq DESC LIMIT 1",
        (rule.key, now, new_id),
        "row",
    )
    if open_ is None:
        yield Query(
            "UPDATE invocations SET coalesce_key = ?, opened_at = ?, window_until = ? WHERE id = ?",
            (rule.key, now, min(now + rule.window, now + rule.max_wait), new_id),
        )
        return False
    opened = float(open_[1])
    yield Query(
        "UPDATE invocations SET window_until = ? WHERE id = ?",
        (min(now + rule.window, opened + rule.max_wait), int(open_[0])),
    )
    yield Query("UPDATE invocations SET coalesce_key = ? WHERE id = ?", (rule.key, new_id))
    yield from _absorb(new_id, int(open_[0]), now)
    shaped.append((item.route, "coalesced"))
    return True


def _absorb(absorbed: int, taker: int, now: float) -> Generator[Query, Any, None]:
    """``absorbed`` ends ``coalesced``, taken by ``taker``, with what it had absorbed before."""
    yield Query(
        "UPDATE invocations SET state = 'coalesced', taken_by = ?, updated_at = ?, window_until = NULL"
        " WHERE id = ?",
        (taker, now, absorbed),
    )
    yield Query(
        "UPDATE invocations SET taken_by = ? WHERE taken_by = ? AND state = 'coalesced'", (taker, absorbed)
    )


def _conflict(
    item: records.NewInvocation,
    key: str,
    new_id: int,
    seq: int,
    now: float,
    shaped: records.Shaped,
) -> Generator[Query, Any, None]:
    """Supersede (and for ``cancel`` cancel) the older invocations of the group."""
    newer = yield Query(
        "SELECT id FROM invocations WHERE ordering_key = ? AND event_seq > ?"
        " AND state NOT IN ('coalesced', 'superseded') ORDER BY event_seq DESC LIMIT 1",
        (key, seq),
        "row",
    )
    if newer is not None:  # routed late: a newer one of the group is there already
        yield Query(
            "UPDATE invocations SET state = 'superseded', taken_by = ?, updated_at = ? WHERE id = ?",
            (int(newer[0]), now, new_id),
        )
        shaped.append((item.route, "superseded"))
        return
    count = yield Query(
        "UPDATE invocations SET state = 'superseded', taken_by = ?, updated_at = ?, wait_reason = NULL"
        " WHERE ordering_key = ? AND state = 'pending' AND taken_by IS NULL AND event_seq < ?",
        (new_id, now, key, seq),
    )
    shaped.extend([(item.route, "superseded")] * int(count))
    if count:  # those they had superseded are now taken by the new one too
        yield Query(
            "UPDATE invocations SET taken_by = ? WHERE state = 'superseded' AND taken_by IN"
            " (SELECT id FROM invocations WHERE taken_by = ? AND state = 'superseded')",
            (new_id, new_id),
        )
    if item.conflict != "cancel":
        return
    yield Query(
        "UPDATE invocations SET taken_by = ?, updated_at = ?"
        " WHERE ordering_key = ? AND state = 'running' AND taken_by IS NULL AND event_seq < ?",
        (new_id, now, key, seq),
    )
    if item.cancel_done:  # its work may still go on (a Workflow): the cancel step stops it
        yield Query(
            "UPDATE invocations SET state = 'pending', taken_by = ?, due_at = ?, attempt = 0,"
            " updated_at = ? WHERE id = (SELECT max(id) FROM invocations"
            " WHERE ordering_key = ? AND state = 'done' AND event_seq < ?)",
            (new_id, now, now, key, seq),
        )
