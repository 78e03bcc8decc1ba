"""The journal's records: what intake stores, what execution claims and settles, what operators see.

They are the vocabulary of the :class:`glue.journal.Journal` protocol, in a module of their own so that
the backends use them without importing the package that chooses between the backends.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from glue import events

__all__ = [
    "EVENT_STATUSES",
    "FINISHED_STATES",
    "INVOCATION_STATES",
    "WAITING_STATES",
    "Activity",
    "Append",
    "Appended",
    "AttemptRecord",
    "AuditEntry",
    "Coalesce",
    "Conflict",
    "EventStatus",
    "Hold",
    "Invocation",
    "InvocationState",
    "JournalUnavailable",
    "NewInvocation",
    "Outcome",
    "Rail",
    "Rejected",
    "Routing",
    "Shaped",
    "StoredEvent",
    "idempotency_key",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Activity:
    """What happened in ``[since, until)`` (the console's overview): events received, and the attempts
    that ended as ``(route, outcome, bucket, count)``, ``bucket`` counting ``bucket_seconds`` from
    ``since``."""

    since: float
    until: float
    bucket_seconds: float
    received: int
    outcomes: tuple[tuple[str, str, int, int], ...]


class JournalUnavailable(Exception):
    """The journal cannot take writes now (disk full, locked, database down): answer 503."""


class Appended(NamedTuple):
    """The outcome of appending one event: its identity, whether it was new, and then its ``seq``.

    A duplicate of a :class:`~glue.events.Digested` event (equal payload within its window) has the
    identity and id of the journaled event it repeats, and ``first_at``, when that one arrived.

    A named tuple: one is made per journaled event, and a tuple is cheaper to make than a dataclass."""

    identity: str
    id: str
    new: bool
    seq: int | None = None
    first_at: float | None = None
    #: The ids of the event's invocations inserted claimed (:attr:`NewInvocation.owner`), in order;
    #: None for one whose idempotency key was journaled already (not inserted).
    claimed: tuple[int | None, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    identity: str
    id: str
    source: str
    type: str
    subject: str | None
    received_at: float
    status: str  # pending -> routed (execution owns the states after that)
    delivery_id: int
    cloudevent: bytes  # structured-mode JSON

    def event(self) -> events.CloudEvent:
        return events.from_json(self.cloudevent)

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "receivedAt": self.received_at,
            "status": self.status,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """A delivery that could not be decoded (a Kafka poison record): kept, visible, never retried."""

    delivery_id: int
    reason: str
    delivery: events.Delivery


# -- execution ------------------------------------------------------------------------------------
#
# Routing turns a journaled event into one invocation per matched route; execution runs them. States:
#
#   event:       pending --claim_events/record_routing--> routed | unmatched
#   invocation:  pending --claim_invocations--> running --settle--> done | planned | pending (retry at
#                due_at) | dead;  planned: a dry-run attempt that ended with its plan (nothing was done)
#                running --release (drain) or an expired lease--> claimable again
#                dead --redrive--> pending;  dead --purge--> gone
#                running --hold (a rail stops it before its attempt)--> held --due or lifted--> pending
#                running --await_approval--> awaiting-approval --approve--> pending | --deny, ttl--> dead
#   flow shaping (routes with ``coalesce`` or ``concurrencyGroup``, decided by record_routing):
#                pending --a later event of its coalescing key--> coalesced (``taken_by``: the one that runs)
#                pending --a newer invocation of its group (supersede, cancel)--> superseded (``taken_by``)
#                running --a newer one (cancel)--> running with ``taken_by`` set: its owner cancels it
#                done --a newer one (cancel, the handler has a cancel step)--> pending with ``taken_by``
#                an invocation claimed with ``taken_by`` set runs its handler's cancel step --> cancelled
#                pending --claimed over its rate limit--> pending, due later, ``wait_reason`` rate-limit
#
# Leases make the claims safe for several replicas (PostgreSQL: ``FOR UPDATE SKIP LOCKED``): a claim
# holds until ``lease_until``; a claim whose lease expired (its owner died) is claimable again. Every write
# that acts on a claim names its ``owner`` and is ignored when the claim is no longer that owner's.

InvocationState = Literal[
    "pending",
    "running",
    "done",
    "planned",
    "dead",
    "held",
    "awaiting-approval",
    "coalesced",
    "superseded",
    "cancelled",
]
#: The states an invocation can have, as ``glue events list --state`` and the listings take them.
INVOCATION_STATES: tuple[str, ...] = typing.get_args(InvocationState)
#: The states in which an invocation is over (retention prunes them).
FINISHED_STATES = ("done", "planned", "coalesced", "superseded", "cancelled")
#: States in which an invocation waits for a rail (or an operator) before its next attempt: they keep
#: their ordering key's place, so nothing after them on that key runs first.
WAITING_STATES: tuple[str, ...] = ("held", "awaiting-approval")
#: What a newer invocation of a concurrency group does to the older ones (see :class:`NewInvocation`).
Conflict = Literal["queue", "supersede", "cancel"]
EventStatus = Literal["pending", "routed", "unmatched"]
#: The statuses an event can have, as ``glue events list --status`` takes them.
EVENT_STATUSES: tuple[str, ...] = typing.get_args(EventStatus)


def idempotency_key(identity: str, route: str) -> str:
    """The stable key of an invocation: the event's identity and the route's name."""
    return f"{route} {identity}"


@dataclasses.dataclass(frozen=True, slots=True)
class Coalesce:
    """A route's coalescing as the journal applies it to one invocation: the key (scoped by the
    route), the quiet ``window`` and the ``max_wait`` bound in seconds, and which edge runs."""

    key: str
    window: float
    max_wait: float
    edge: Literal["trailing", "leading"] = "trailing"


@dataclasses.dataclass(frozen=True, slots=True)
class NewInvocation:
    """What routing decided for one matched route, to be persisted by :meth:`Journal.record_routing`.

    ``state`` is ``pending`` (run at ``due_at``) or ``dead`` when the route matched but its parameters
    could not be rendered (``error`` says why): the event then sits in the dead-letter queue at once.
    ``ordering_key`` is already scoped by the caller (routes do not share keys); None = unordered.
    It is the key of the route's concurrency group, whose ``conflict`` says what a newer invocation
    does to the older ones: ``queue`` (None) waits its turn; ``supersede`` ends the waiting ones
    ``superseded``; ``cancel`` also cancels the running one, and when ``cancel_done`` (its handler has
    a cancel step) the one that finished last, whose work may still be going on (a Workflow).
    ``coalesce``: the invocation joins the open invocation of its key (see :class:`Coalesce`).
    ``rate_key``: the token bucket it takes a token from before it runs (scoped by the route).
    ``owner`` and ``lease_until``: inserted already claimed by ``owner`` (``running``, its first
    attempt), whose dispatcher starts it from memory once the commit is durable, with no claim
    transaction; only the sole daemon on a SQLite journal routes at intake so.
    """

    route: str
    handler: str
    idempotency_key: str
    params: Mapping[str, Any]
    due_at: float
    ordering_key: str | None = None
    state: Literal["pending", "dead"] = "pending"
    error: str | None = None
    conflict: Conflict | None = None
    cancel_done: bool = False
    coalesce: Coalesce | None = None
    rate_key: str | None = None
    owner: str | None = None
    lease_until: float | None = None

    @property
    def shaped(self) -> bool:
        """Whether routing decides more than its insertion (coalescing, superseding): such an
        invocation is recorded by ``record_routing``, in the transaction that decides it."""
        return self.state == "pending" and (
            self.coalesce is not None or self.conflict in ("supersede", "cancel")
        )


#: What routing ended besides recording: (route, state) for each invocation it left ``coalesced`` or
#: ``superseded`` (metrics count them).
Shaped = list[tuple[str, str]]


#: What the routes decided at intake for an appended batch (see ``Inbox.append``): None, or for each
#: event its new invocations (None: that event is routed after the journal).
Routing = Sequence[Sequence[NewInvocation] | None] | None

#: One delivery of ``Inbox.append_many``: the delivery, its events and their routing (as ``append``
#: takes them).
Append = tuple[events.Delivery, Sequence[events.CloudEvent], Routing]


@dataclasses.dataclass(frozen=True, slots=True)
class Invocation:
    """One route's work on one event, as persisted.

    ``attempt`` counts the attempts started: a claim increments it, so a running invocation's
    ``attempt`` is the number of the attempt in progress (1 for the first).
    """

    id: int
    event_seq: int
    route: str
    handler: str
    idempotency_key: str
    ordering_key: str | None
    params: Mapping[str, Any]
    state: InvocationState
    attempt: int
    due_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    owner: str | None
    lease_until: float | None
    #: Why it waits: a ``held`` one for a rail (paused, budget, breaker, window, client-down), a
    #: pending one past its first due time for its rate limit (``rate-limit``).
    wait_reason: str | None = None
    #: The dry-run plan of a ``planned`` invocation (the API calls it would have made) or of one
    #: awaiting approval (JSON of a ``contract.Plan``); else None.
    plan: Mapping[str, Any] | None = None
    #: Who approved it (and the note): the approval gate lets it pass on every later attempt.
    approved_by: str | None = None
    #: For a coalesced or superseded invocation, the one that took its place; for a running or
    #: pending one, the newer invocation that cancels it (its handler's cancel step runs).
    taken_by: int | None = None
    rate_key: str | None = None

    def summary(self) -> dict[str, Any]:
        found = {
            "id": self.id,
            "eventSeq": self.event_seq,
            "route": self.route,
            "handler": self.handler,
            "idempotencyKey": self.idempotency_key,
            "orderingKey": self.ordering_key,
            "state": self.state,
            "attempt": self.attempt,
            "dueAt": self.due_at,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "lastError": self.last_error,
            "plan": dict(self.plan) if self.plan is not None else None,
        }
        if self.wait_reason is not None:
            found["waitReason"] = self.wait_reason
        if self.taken_by is not None:
            found["takenBy"] = self.taken_by
        if self.approved_by is not None:
            found["approvedBy"] = self.approved_by
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    """A claimed invocation a rail stops before its attempt: it waits ``held`` for ``reason`` until
    ``due_at`` (when the rail may have lifted; a lifted pause releases it at once). The claim's attempt
    is not counted."""

    invocation_id: int
    reason: str
    due_at: float
    #: The rails row (a route or ``*``) whose pause this hold obeys: it applies only if that row is
    #: still paused when the hold commits (a resume that came in between wins). None: no such check.
    rail: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rail:
    """One row of the ``rails`` table: a route's (or, as ``*``, every route's) pause and breaker."""

    route: str
    paused: bool = False
    reason: str | None = None
    until: float | None = None  # the pause lifts by itself then (None: until resumed)
    by: str | None = None
    at: float | None = None
    breaker_open_until: float | None = None  # open until then, then half-open (None: closed)
    breaker_probe: int | None = None  # the invocation probing a half-open breaker
    breaker_probe_until: float | None = None  # a probe that has not ended by then is abandoned

    def paused_at(self, now: float) -> bool:
        """Whether the pause holds at ``now``."""
        return self.paused and (self.until is None or now < self.until)

    def summary(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "paused": self.paused,
            "reason": self.reason,
            "until": self.until,
            "by": self.by,
            "at": self.at,
            "breakerOpenUntil": self.breaker_open_until,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action (or the daemon's start): who, when, what, on what, why."""

    id: int
    at: float
    who: str
    action: str
    route: str | None
    target: str | None
    reason: str | None
    detail: Mapping[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "who": self.who,
            "action": self.action,
            "route": self.route,
            "target": self.target,
            "reason": self.reason,
            "detail": dict(self.detail),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How one claimed attempt ended, applied by :meth:`Journal.settle`.

    ``done``: finished. ``planned``: a dry-run attempt that ended with ``plan`` (nothing was done).
    ``retry``: back to pending, due at ``due_at``. ``dead``: dead-lettered. ``cancelled``: a newer
    invocation of its group cancelled it (its cancel step ran). ``error`` is a one-line reason without
    secrets, kept as ``last_error`` (``done`` without an error keeps the previous one; ``done`` with
    an error is an invocation dropped after its attempts). ``started_at`` and
    ``duration`` (seconds; None when the handler was not called) go to the attempt's history row.
    """

    invocation_id: int
    state: Literal["done", "planned", "retry", "dead", "cancelled"]
    due_at: float | None = None
    error: str | None = None
    plan: Mapping[str, Any] | None = None
    started_at: float | None = None
    duration: float | None = None
    #: ``done`` of an invocation whose handler has a cancel step: when a newer invocation of its
    #: group marked it for cancelling while it ran (``taken_by``), it goes back to pending instead,
    #: so that its cancel step undoes what it just finished.
    undo: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of an invocation, as kept in its history (table ``attempts``), written in the same
    commit as the outcome that ended it.

    ``outcome``: done, planned, retry, dead or dropped (the route keeps no dead letters). ``attempt``
    restarts from 1 after an operator's ``glue dlq retry``; the history keeps the earlier ones."""

    invocation_id: int
    attempt: int
    started_at: float
    duration: float | None
    outcome: str
    error: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "startedAt": self.started_at,
            "durationMs": round(self.duration * 1000, 3) if self.duration is not None else None,
            "outcome": self.outcome,
            "error": self.error,
        }
