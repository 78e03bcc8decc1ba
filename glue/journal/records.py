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
    "Appended",
    "Coalesce",
    "Conflict",
    "EventStatus",
    "Invocation",
    "InvocationState",
    "JournalUnavailable",
    "NewInvocation",
    "Outcome",
    "Rejected",
    "Routing",
    "Shaped",
    "StoredEvent",
    "idempotency_key",
]


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
#   invocation:  pending --claim_invocations--> running --settle--> done | pending (retry at due_at) | dead
#                running --release (drain) or an expired lease--> claimable again
#                dead --redrive--> pending;  dead --purge--> gone
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

InvocationState = Literal["pending", "running", "done", "dead", "coalesced", "superseded", "cancelled"]
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
    #: For a coalesced or superseded invocation, the one that took its place; for a running or
    #: pending one, the newer invocation that cancels it (its handler's cancel step runs).
    taken_by: int | None = None
    #: Why a pending invocation waits past its first due time (``rate-limit``).
    wait_reason: str | None = None
    rate_key: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
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
            **({"takenBy": self.taken_by} if self.taken_by is not None else {}),
            **({"waitReason": self.wait_reason} if self.wait_reason is not None else {}),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How one claimed attempt ended, applied by :meth:`Journal.settle`.

    ``done``: finished. ``retry``: back to pending, due at ``due_at``. ``dead``: dead-lettered.
    ``cancelled``: a newer invocation of its group cancelled it (its cancel step ran).
    ``error`` is a one-line reason without secrets, kept as ``last_error`` (``done`` without an error
    keeps the previous one; ``done`` with an error is an invocation dropped after its attempts).
    """

    invocation_id: int
    state: Literal["done", "retry", "dead", "cancelled"]
    due_at: float | None = None
    error: str | None = None
    #: ``done`` of an invocation whose handler has a cancel step: when a newer invocation of its
    #: group marked it for cancelling while it ran (``taken_by``), it goes back to pending instead,
    #: so that its cancel step undoes what it just finished.
    undo: bool = False
