"""What both journal backends share about rows, so that each keeps only its SQL and its connections.

- The columns a backend selects for each record, in the order the records take them.
- Rows -> records (:class:`~glue.journal.records.StoredEvent`, ``Invocation``, ``Delivery``,
  ``Rejected``): a row is any sequence of those columns (an ``sqlite3`` tuple, an ``asyncpg.Record``).
- The rules that decide what is written: the status an event is appended with, what an outcome does to
  its invocation, what a key of ``get`` names, and the filters and limit of a listing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import orjson

from glue import events
from glue.journal import records

__all__ = [
    "ATTEMPT_COLUMNS",
    "DELIVERY_COLUMNS",
    "EVENT_COLUMNS",
    "INVOCATION_COLUMNS",
    "PARAMS",
    "PLAN",
    "REJECTED_COLUMNS",
    "UNDO",
    "Answer",
    "Answers",
    "Page",
    "Settlement",
    "activity_query",
    "appended_status",
    "attempt",
    "browse_query",
    "bucket",
    "check_routing",
    "dedup_window",
    "delivery",
    "events_page",
    "invocation",
    "invocations_page",
    "rejected",
    "seq_of",
    "settlement",
    "stored",
]

EVENT_COLUMNS = "seq, identity, id, source, type, subject, received_at, status, delivery_id, cloudevent"
INVOCATION_COLUMNS = (
    "id, event_seq, route, handler, idempotency_key, ordering_key, params, state, attempt, due_at,"
    " created_at, updated_at, last_error, owner, lease_until, wait_reason, plan, approved_by, taken_by,"
    " rate_key"
)
ATTEMPT_COLUMNS = "invocation_id, attempt, started_at, duration, outcome, error"
DELIVERY_COLUMNS = "received_at, transport, endpoint, format, headers, body, key"
REJECTED_COLUMNS = f"id, rejected, {DELIVERY_COLUMNS}"

#: Where the field ``params`` is in a row of INVOCATION_COLUMNS (stored as JSON).
PARAMS = 6
#: Where the field ``plan`` is (JSON, or NULL).
PLAN = 16

#: Sequence numbers are below this (PostgreSQL's bigint); a larger number is no seq.
_SEQ_LIMIT = 1 << 63


# -- rows -> records ------------------------------------------------------------------------------


def stored(row: Sequence[Any]) -> records.StoredEvent:
    """An event from a row of EVENT_COLUMNS."""
    return records.StoredEvent(*row)


def invocation(row: Sequence[Any]) -> records.Invocation:
    """An invocation from a row of INVOCATION_COLUMNS (its params decoded)."""
    values = list(row)
    values[PARAMS] = orjson.loads(values[PARAMS])
    if values[PLAN] is not None:
        values[PLAN] = orjson.loads(values[PLAN])
    return records.Invocation(*values)


def attempt(row: Sequence[Any]) -> records.AttemptRecord:
    """An attempt of an invocation's history from a row of ATTEMPT_COLUMNS."""
    return records.AttemptRecord(*row)


def delivery(row: Sequence[Any]) -> events.Delivery:
    """A delivery from a row of DELIVERY_COLUMNS."""
    received_at, transport, endpoint, format_, headers, body, key = row
    return events.Delivery(
        transport=transport,
        endpoint=endpoint,
        format=format_,
        headers=orjson.loads(headers),
        body=bytes(body),
        received_at=received_at,
        key=bytes(key) if key is not None else None,
    )


def rejected(row: Sequence[Any]) -> records.Rejected:
    """A rejected delivery from a row of REJECTED_COLUMNS."""
    delivery_id, reason, *fields = row
    return records.Rejected(delivery_id, reason, delivery(fields))


# -- answers of a group commit -------------------------------------------------------------------


class Answer(Protocol):
    """Where a group commit answers one append: its caller's future, or its place in
    :class:`Answers`."""

    def done(self) -> bool: ...

    def set_result(self, result: list[records.Appended], /) -> Any: ...

    def set_exception(self, exception: BaseException, /) -> Any: ...


class Answers:
    """The answers of appends made together (``append_many``): one future for all of them, so a batch
    of N deliveries costs its caller one wait, not N. It resolves once every append has its result, or
    fails with the first failure (a group fails as a whole)."""

    __slots__ = ("_left", "future", "results")

    def __init__(self, future: asyncio.Future[list[list[records.Appended]]], count: int) -> None:
        self.future = future
        self.results: list[list[records.Appended]] = [[] for _ in range(count)]
        self._left = count

    def slot(self, index: int) -> _Slot:
        """The answer of the append at ``index``."""
        return _Slot(self, index)

    def answer(self, index: int, result: list[records.Appended]) -> None:
        """The append at ``index`` committed with this result."""
        self.results[index] = result
        self._left -= 1
        if not self._left and not self.future.done():
            self.future.set_result(self.results)


class _Slot:
    __slots__ = ("answers", "index")

    def __init__(self, answers: Answers, index: int) -> None:
        self.answers = answers
        self.index = index

    def done(self) -> bool:
        return self.answers.future.done()

    def set_result(self, result: list[records.Appended], /) -> None:
        self.answers.answer(self.index, result)

    def set_exception(self, exception: BaseException, /) -> None:
        if not self.answers.future.done():
            self.answers.future.set_exception(exception)


# -- rules ----------------------------------------------------------------------------------------


def appended_status(decided: Sequence[records.NewInvocation] | None) -> str:
    """The status a new event is journaled with: ``pending`` when not routed at intake (None), else
    ``routed`` or ``unmatched`` (no route matched)."""
    return "pending" if decided is None else "routed" if decided else "unmatched"


def dedup_window(event: events.CloudEvent) -> tuple[str, float, float] | None:
    """Where a :class:`~glue.events.Digested` event's duplicates are: its key, and the receive times
    (inclusive) within which a journaled event with that key makes it a duplicate; None for an event
    whose producer gave its id (deduplicated on identity alone, at no extra cost)."""
    if not events.is_digested(event):
        return None
    return event.key, event.received_at - event.window, event.received_at + event.window


def check_routing(batch: Sequence[Any], routing: Sequence[Any] | None) -> None:
    """An append's routing has one entry per event of its batch (a programming error otherwise,
    raised before the delivery joins a group, whose other appends it would fail)."""
    if routing is not None and len(routing) != len(batch):
        raise ValueError(f"routing has {len(routing)} entries for a batch of {len(batch)} events")


class Settlement(NamedTuple):
    """What an outcome writes to its running invocation (which also loses its owner and lease), and
    the row its attempt adds to the invocation's history.

    ``due_at`` None keeps the invocation's due time; ``keep_error``: a None ``error`` keeps its
    ``last_error`` (else ``error`` replaces it). ``plan``: the JSON of a planned invocation's plan.
    ``outcome``: the attempt's ending as its history shows it (done, planned, retry, dead, dropped);
    ``started_at`` and ``duration`` (None: the handler was not called)."""

    invocation_id: int
    state: records.InvocationState
    due_at: float | None
    error: str | None
    keep_error: bool
    plan: bytes | None
    outcome: str
    started_at: float
    duration: float | None

    @property
    def plain(self) -> bool:
        """Done without an error: only the state changes (the common case, settled in bulk)."""
        return self.state == "done" and self.error is None


def _no_nul(value: Any) -> Any:
    """``value`` with NUL in its strings replaced by U+FFFD: PostgreSQL's jsonb refuses ``\\u0000``,
    which a plan may carry from event data (one such plan would fail its whole settlement)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_no_nul(key): _no_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nul(item) for item in value]
    return value


def settlement(outcome: records.Outcome, now: float) -> Settlement:
    """What ``outcome`` does to its invocation (see :class:`~glue.journal.records.Outcome`): ``done``
    keeps the previous error unless it brings one, ``planned`` stores its plan, ``retry`` goes back to
    ``pending`` due at its ``due_at`` (``now`` when it has none), ``dead`` is dead-lettered."""
    started = outcome.started_at if outcome.started_at is not None else now
    ran = (started, outcome.duration)
    if outcome.state == "done":
        ending = "dropped" if outcome.error is not None else "done"
        return Settlement(outcome.invocation_id, "done", None, outcome.error, True, None, ending, *ran)
    if outcome.state == "planned":
        plan = orjson.dumps(_no_nul(dict(outcome.plan or {})))
        return Settlement(outcome.invocation_id, "planned", None, outcome.error, True, plan, "planned", *ran)
    if outcome.state == "cancelled":
        error = outcome.error
        return Settlement(outcome.invocation_id, "cancelled", None, error, True, None, "cancelled", *ran)
    if outcome.state == "retry":
        due_at = outcome.due_at if outcome.due_at is not None else now
        return Settlement(outcome.invocation_id, "pending", due_at, outcome.error, False, None, "retry", *ran)
    return Settlement(outcome.invocation_id, "dead", None, outcome.error, False, None, "dead", *ran)


def bucket(
    tokens: float | None, updated_at: float | None, *, now: float, rate: float, burst: int
) -> tuple[float, float]:
    """A token bucket (``rate`` tokens a second, at most ``burst``) asked for one token at ``now``:
    the tokens it keeps, and how long the caller waits first (0: it took the token). A new bucket
    starts full; time that runs backwards (another replica's clock) adds nothing."""
    if tokens is None or updated_at is None:
        tokens = float(burst)
    else:
        tokens = min(float(burst), tokens + max(now - updated_at, 0.0) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


#: After a batch of outcomes: finished invocations a newer one marked for cancelling while they ran
#: go back to pending, due at once, to run their cancel step (``Outcome.undo``); ``?`` placeholders.
UNDO = (
    "UPDATE invocations SET state = 'pending', due_at = ?, attempt = 0"
    " WHERE id = ? AND state = 'done' AND taken_by IS NOT NULL"
)


def seq_of(key: int | str) -> int | None:
    """The sequence number a key of ``get`` names, if it can name one (an int, or a string of digits,
    in range); whatever else it is, and when no event has that seq, the key is an identity or an id."""
    if isinstance(key, int) or key.isdigit():
        seq = int(key)
        if seq < _SEQ_LIMIT:
            return seq
    return None


class Page(NamedTuple):
    """One page of a listing: rows past ``after`` in ``key`` order, at most ``limit`` of them, whose
    columns equal the ``equal`` filters that are set, updated at or after ``since`` when given."""

    key: str
    after: int
    limit: int
    equal: tuple[tuple[str, Any], ...]
    since: float | None = None

    def query(self, select: str, mark: Callable[[int], str]) -> tuple[str, list[Any]]:
        """``select`` narrowed to this page, with its arguments; ``mark(n)`` is the placeholder of the
        n-th argument (from 1) in the backend's SQL."""
        args: list[Any] = [self.after]
        sql = f"{select} WHERE {self.key} > {mark(1)}"
        for column, value in self.equal:
            if value is not None:
                args.append(value)
                sql += f" AND {column} = {mark(len(args))}"
        if self.since is not None:
            args.append(self.since)
            sql += f" AND updated_at >= {mark(len(args))}"
        args.append(self.limit)
        return f"{sql} ORDER BY {self.key} LIMIT {mark(len(args))}", args


def events_page(*, after: int, limit: int, status: str | None, type: str | None) -> Page:
    """The page of ``Admin.list``: events in seq order, by status and type."""
    return Page("seq", after, limit, (("status", status), ("type", type)))


def browse_query(
    mark: Callable[[int], str],
    *,
    before: int | None,
    limit: int,
    equal: dict[str, str | None],
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    """``Admin.browse``: events newest first (below seq ``before`` when given), whose columns equal
    the ``equal`` filters that are set, received in ``[since, until)``; ``mark(n)`` as in :class:`Page`."""
    args: list[Any] = []
    where: list[str] = []

    def add(condition: str, value: Any) -> None:
        args.append(value)
        where.append(condition.format(mark(len(args))))

    if before is not None:
        add("seq < {}", before)
    for column, value in equal.items():
        if value is not None:
            add(f"{column} = {{}}", value)
    if since is not None:
        add("received_at >= {}", since)
    if until is not None:
        add("received_at < {}", until)
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    args.append(limit)
    return f"{sql} ORDER BY seq DESC LIMIT {mark(len(args))}", args


def activity_query(mark: Callable[[int], str], bucket_of: str) -> str:
    """``Admin.activity``'s attempts: by route, outcome and time bucket (``bucket_of`` is the
    backend's integer division of its argument by the bucket size), started in [$1, $3), bucket
    size $2."""
    since, size = mark(1), mark(2)
    bucket = bucket_of.format(f"(a.started_at - {since}) / {size}")
    return (
        f"SELECT i.route, a.outcome, {bucket} AS b, count(*) FROM attempts a"
        f" JOIN invocations i ON i.id = a.invocation_id"
        f" WHERE a.started_at >= {mark(3)} AND a.started_at < {mark(4)}"
        " GROUP BY i.route, a.outcome, b"
    )


def invocations_page(
    *,
    after: int,
    limit: int,
    state: str | None,
    route: str | None,
    event_seq: int | None,
    since: float | None,
) -> Page:
    """The page of ``Admin.invocations``: invocations in id order, by state, route and event, updated
    since ``since`` (a dead one: since it died)."""
    return Page("id", after, limit, (("state", state), ("route", route), ("event_seq", event_seq)), since)
