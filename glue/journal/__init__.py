"""The durable inbox. Everything after intake reads from here.

:class:`Journal` is the protocol both backends implement: SQLite (embedded default, one file, WAL,
group commit) and PostgreSQL (several replicas, leased claims). Callers depend on this module only and
get a backend from :func:`create`. The records the protocol speaks in live in
:mod:`glue.journal.records` and are re-exported here; what both backends share about rows, in
:mod:`glue.journal.rows`.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from glue import events
from glue.journal.records import (
    EVENT_STATUSES,
    FINISHED_STATES,
    INVOCATION_STATES,
    WAITING_STATES,
    Activity,
    Append,
    Appended,
    AttemptRecord,
    AuditEntry,
    Coalesce,
    Conflict,
    EventStatus,
    Hold,
    Invocation,
    InvocationState,
    JournalUnavailable,
    NewInvocation,
    Outcome,
    Rail,
    Rejected,
    Shaped,
    StoredEvent,
    idempotency_key,
)

if TYPE_CHECKING:
    from glue import settings as settings_mod

__all__ = [
    "EVENT_STATUSES",
    "FINISHED_STATES",
    "INVOCATION_STATES",
    "WAITING_STATES",
    "Activity",
    "Admin",
    "Append",
    "Appended",
    "AttemptRecord",
    "AuditEntry",
    "Coalesce",
    "Conflict",
    "EventStatus",
    "Hold",
    "Inbox",
    "Invocation",
    "InvocationState",
    "Journal",
    "JournalUnavailable",
    "NewInvocation",
    "Outcome",
    "Rail",
    "Rails",
    "Rejected",
    "Shaped",
    "StoredEvent",
    "WorkQueue",
    "create",
    "idempotency_key",
]


class Inbox(Protocol):
    """What intake writes: deliveries in, undecodable deliveries kept, and the backlog that bounds intake."""

    async def append(
        self,
        delivery: events.Delivery,
        batch: Sequence[events.CloudEvent],
        routing: Sequence[Sequence[NewInvocation] | None] | None = None,
    ) -> list[Appended]:
        """Durably store the delivery and its events, deduplicated on identity, in one transaction.
        An event identified by a digest (:class:`glue.events.Digested`) is also a duplicate of a
        journaled event with its key received within its window; its :class:`Appended` then names
        that event (identity, id, ``first_at``).

        ``routing[i]``, when given and not None, is what the routes decided for ``batch[i]``: a new
        event is then stored ``routed`` with those invocations (``unmatched`` when there are none) in
        the same transaction, and the executor does not route it again. None leaves it ``pending``
        (routes that read the object store route after the journal). A duplicate's routing is
        dropped with it. Returns once committed. Raises JournalUnavailable when the write cannot be
        made."""
        ...

    async def append_many(self, items: Sequence[Append]) -> list[list[Appended]]:
        """:meth:`append` for several deliveries at once (a batch fetched from a bus): each is
        stored and deduplicated as ``append`` stores it, in the order given (an event repeated by a
        later delivery of the batch is a duplicate there), all in the same group commit; returns
        what each appended, once all are committed. One wait for the batch instead of one per
        delivery. Raises JournalUnavailable when the write cannot be made: none is then journaled."""
        ...

    async def reject(self, delivery: events.Delivery, reason: str) -> int:
        """Durably store an undecodable delivery with its reason; returns its delivery id."""
        ...

    async def ping(self) -> None:
        """Raise JournalUnavailable unless a write would succeed now."""
        ...

    async def backlog(self) -> int:
        """Events journaled but not yet routed."""
        ...


class WorkQueue(Protocol):
    """What execution reads and writes: routing claims, invocation claims under leases, outcomes."""

    async def backlog(self) -> int:
        """Events journaled but not yet routed."""
        ...

    async def get(self, key: int | str) -> StoredEvent | None:
        """An event by sequence number, identity or CloudEvent id."""
        ...

    async def claim_events(
        self, owner: str, *, limit: int, lease: float, now: float
    ) -> builtins.list[StoredEvent]:
        """Claim up to ``limit`` pending events, lowest ``seq`` first, for ``lease`` seconds.

        An event already claimed by another owner whose lease has not expired at ``now`` is skipped;
        an expired claim is taken over. The returned events are then given to :meth:`record_routing`."""
        ...

    async def record_routing(
        self,
        owner: str,
        decisions: Mapping[int, Sequence[NewInvocation]],
        *,
        now: float,
        unfinished: Collection[int] = (),
    ) -> Shaped:
        """Persist the routing of claimed events, all in one transaction, and shape the flow of the
        new invocations (coalescing, concurrency groups: :mod:`glue.journal.shaping`) in it; returns
        the invocations that shaping ended ``coalesced`` or ``superseded``, by route.

        For each ``seq -> invocations``: insert the invocations (one whose ``idempotency_key`` exists
        already is skipped, so a re-route after a crash adds nothing), mark the event ``routed`` (or
        ``unmatched`` when the list is empty) and drop its claim. An event no longer claimed by ``owner``
        or no longer pending is left alone (another replica took it over). An event in ``unfinished``
        was routed by some routes only (the others could not decide yet): its invocations are inserted,
        and it stays pending and claimed, to be routed again by a later pass."""
        ...

    async def claim_invocations(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        now: float,
        exclude_routes: Collection[str] = (),
    ) -> builtins.list[Invocation]:
        """Claim up to ``limit`` runnable invocations for ``lease`` seconds, earliest ``due_at`` first.

        Runnable: ``pending`` with ``due_at <= now``, or ``running`` with an expired lease (its owner
        died), and its route not in ``exclude_routes`` (routes at their concurrency limit). An
        invocation with an ``ordering_key`` is runnable only if no other unfinished (pending or running)
        invocation with that key comes before it (by event seq, then id) and no event before it is
        still pending routing: per-key order holds across retries, restarts and replicas.
        A claim sets ``state=running``, ``owner``, ``lease_until=now+lease`` and increments ``attempt``."""
        ...

    async def settle(
        self, owner: str, outcomes: Sequence[Outcome], *, now: float, prompt: bool = True
    ) -> int:
        """Apply the outcomes of attempts in one transaction; returns how many were applied.

        The same transaction adds each applied outcome's attempt to the invocation's history
        (:meth:`Admin.attempts`) and stores a ``planned`` outcome's plan. Not ``prompt`` (nothing
        waits for these outcomes): the journal may hold them back briefly to commit them with other
        writes (SQLite: in the next intake group's transaction).

        An outcome for an invocation that is not ``running`` under ``owner`` is ignored (its lease
        expired and another owner took it; that owner's outcome counts)."""
        ...

    async def release(self, owner: str | None, *, now: float, ids: Collection[int] | None = None) -> int:
        """Give back claims (drain): ``owner``'s running invocations (all, or those in ``ids``) return
        to ``pending``, due ``now``, and the interrupted attempt is not counted; its event claims are
        dropped. ``owner`` None: every owner's (the only daemon on this journal, at start). Returns how
        many invocations were released."""
        ...

    async def cancel_requested(self, owner: str) -> dict[int, int]:
        """``owner``'s running invocations that a newer one of their group cancels (``taken_by``
        set, by whichever replica recorded the newer one), with that one's id: the owner cancels
        their attempts."""
        ...

    async def absorbed(self, invocation_id: int) -> builtins.list[str]:
        """The ids of the events coalesced into an invocation (besides its own), in event order."""
        ...

    async def defer(self, owner: str, due: Mapping[int, float], *, reason: str, now: float) -> int:
        """Give back claims that a gate holds (rate limit): each invocation in ``due`` returns to
        ``pending`` due at its time, with ``reason`` as its ``wait_reason``, and the claim is not
        counted as an attempt. Returns how many were deferred."""
        ...

    async def take_token(self, key: str, *, rate: float, burst: int, now: float) -> float:
        """Take a token from the bucket ``key`` (``rate`` tokens a second, ``burst`` at most; a new
        bucket is full), shared by every replica: 0 when taken, else the seconds until one is there
        (nothing is taken then)."""
        ...

    async def dead_letters(self) -> int:
        """How many invocations are in the dead-letter queue now (``glue_dead_letters``)."""
        ...

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest unfinished (pending or running) invocation, None when none:
        ``now`` minus it is the age metric."""
        ...


class Admin(Protocol):
    """What operators read and change: events, deliveries, rejected deliveries, invocations, dead letters."""

    async def get(self, key: int | str) -> StoredEvent | None:
        """An event by sequence number, identity or CloudEvent id."""
        ...

    async def list(
        self, *, limit: int = 100, after: int = 0, status: str | None = None, type: str | None = None
    ) -> builtins.list[StoredEvent]: ...

    async def browse(
        self,
        *,
        before: int | None = None,
        limit: int = 50,
        status: str | None = None,
        type: str | None = None,
        source: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[StoredEvent]:
        """Events newest first, below seq ``before``, filtered (``since``/``until``: received in
        ``[since, until)``): the console's listing."""
        ...

    async def activity(self, *, since: float, until: float, bucket_seconds: float) -> Activity:
        """Events received in ``[since, until)`` and the attempts started then that have ended, by
        route, outcome and time bucket (the console's overview)."""
        ...

    async def delivery(self, delivery_id: int) -> events.Delivery | None: ...

    async def rejected(self, *, limit: int = 100) -> builtins.list[Rejected]: ...

    async def invocation(self, invocation_id: int) -> Invocation | None: ...

    async def invocations(
        self,
        *,
        state: InvocationState | None = None,
        route: str | None = None,
        event_seq: int | None = None,
        since: float | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> builtins.list[Invocation]:
        """Invocations in id order, filtered; ``since`` bounds ``updated_at`` (dead: when it died)."""
        ...

    async def attempts(self, invocation_id: int) -> builtins.list[AttemptRecord]:
        """Every attempt of an invocation that ended (its history), oldest first; empty when none
        or no such invocation."""
        ...

    async def redrive(self, ids: Collection[int], *, now: float) -> builtins.list[int]:
        """Put dead invocations back to ``pending`` due ``now`` with ``attempt=0`` (same id and
        idempotency key); ids that are not dead are skipped. Returns the ids redriven."""
        ...

    async def purge(self, ids: Collection[int]) -> builtins.list[int]:
        """Delete dead invocations; others are skipped. Returns the ids deleted."""
        ...


class Rails(Protocol):
    """Safety rails in the journal, so that every replica obeys the same ones and a restart keeps them:
    pauses and breakers per route (``*``: every route), the starts budgets count, invocations held or
    awaiting approval, and the audit trail of operator actions."""

    async def rails(self) -> dict[str, Rail]:
        """Every rails row by route (``*`` is the global one)."""
        ...

    async def set_pause(
        self, route: str, *, paused: bool, reason: str | None, until: float | None, by: str, now: float
    ) -> int:
        """Pause or resume ``route`` (``*``: every route). Resuming releases at once the invocations held
        for ``paused`` (of that route; ``*``: of every route): returns how many."""
        ...

    async def hold(self, owner: str, holds: Sequence[Hold], *, now: float) -> builtins.list[int]:
        """Hold claimed invocations (running under ``owner``) before their attempt: state ``held`` with
        a reason, due when the rail may lift; the claim's attempt is not counted. A hold naming a
        ``rail`` applies only while that rail is paused. Returns the ids held (the others stay claimed)."""
        ...

    async def release_held(self, route: str, reason: str, *, now: float) -> int:
        """Invocations of ``route`` (``*``: every route) held for ``reason`` go back to pending now."""
        ...

    async def wake_held(self, *, now: float) -> int:
        """Held invocations due by ``now`` go back to ``pending`` (their gates are checked again)."""
        ...

    async def take_starts(
        self, route: str, budgets: Sequence[tuple[str, int, float]], *, now: float
    ) -> float | None:
        """For each ``(key, max, per)``: fewer than ``max`` starts of ``route`` with ``key`` in the
        window ``(now - per, now]``? If all have room, record a start for each and return None (one
        transaction, safe between replicas); else the time when all would have room."""
        ...

    async def starts(self, route: str, *, since: float) -> dict[str, int]:
        """Starts recorded for ``route`` after ``since``, by key (``glue routes list``)."""
        ...

    async def breaker_probe(self, route: str, invocation_id: int, *, now: float, lease: float) -> bool:
        """Take the probe of ``route``'s breaker when its cooldown is over and no live probe runs."""
        ...

    async def breaker_ended(
        self,
        route: str,
        invocation_id: int,
        *,
        failed: bool,
        failures: int,
        within: float,
        cooldown: float,
        now: float,
    ) -> str | None:
        """Count an attempt's end for ``route``'s breaker: ``opened`` when a failure (re)opens it,
        ``closed`` when the probe succeeded (held ``breaker`` invocations are released), else None."""
        ...

    async def await_approval(
        self, owner: str, invocation_id: int, plan: Mapping[str, Any], *, deadline: float, now: float
    ) -> bool:
        """A claimed invocation waits in ``awaiting-approval`` with its dry-run ``plan`` until
        ``deadline`` (then :meth:`expire_approvals` dead-letters it); the claim's attempt is not counted."""
        ...

    async def decide(self, invocation_id: int, *, approve: bool, by: str, now: float) -> bool:
        """Approve (it runs now, and passes the approval gate from then on) or deny (dead-lettered)
        an invocation awaiting approval. False when it is not awaiting approval."""
        ...

    async def expire_approvals(self, *, now: float) -> builtins.list[int]:
        """Dead-letter (reason ``approval expired``) what waited for approval past its ttl."""
        ...

    async def waiting(self) -> dict[tuple[str, str, str | None], int]:
        """Unfinished invocations by ``(route, state, wait_reason)`` (the held gauges)."""
        ...

    async def approvals_past_half(self, *, now: float) -> int:
        """Invocations awaiting approval for more than half their ttl (they entered at ``updated_at``
        and expire at ``due_at``): the alert's metric."""
        ...

    async def route_states(self) -> dict[str, dict[str, int]]:
        """Invocations by route and state (``glue routes list``)."""
        ...

    async def record_audit(
        self,
        who: str,
        action: str,
        *,
        route: str | None = None,
        target: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
        now: float,
    ) -> int:
        """Append one entry to the audit trail; returns its id."""
        ...

    async def take_unarchived_audit(self, *, limit: int = 500) -> builtins.list[AuditEntry]:
        """Audit entries not yet copied to the bucket archive, marked as copied (one replica takes each)."""
        ...

    async def audit(
        self, *, since: float | None = None, route: str | None = None, after: int = 0, limit: int = 1000
    ) -> builtins.list[AuditEntry]:
        """Audit entries in order, from ``since``, of ``route`` (and the global ones)."""
        ...


class Journal(Inbox, WorkQueue, Admin, Rails, Protocol):
    """A whole journal backend: every role, opened and closed by the daemon or a command."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


def create(config: settings_mod.Journal) -> Journal:
    """The backend the settings name (not yet opened)."""
    if config.backend == "postgres":
        from glue.journal import postgres

        return postgres.PostgresJournal(config)
    from glue.journal import sqlite

    return sqlite.SQLiteJournal(config)
