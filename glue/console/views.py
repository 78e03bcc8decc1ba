"""The console's pages and actions. Reads go to the journal and the router (glue.explain puts an
event's routing in words, as ``glue explain`` does); every action goes through glue.operations, as
the CLI's and the admin API's do, so each lands in the audit trail under the principal's name."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from glue import explain, journal, operations, rails, routing
from glue import settings as settings_mod
from glue.console import pages, svg

__all__ = ["Views"]

#: Events per page of the listing.
PAGE = 50
#: The overview's chart: buckets of 5 minutes, an hour of them.
BUCKET, SLOTS = 300.0, 12
#: How often the live events stream looks for new events (seconds).
POLL = 1.0
_EVENT_STREAM = {"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
#: What a filter field may hold: a bound on what reaches a query.
_FIELD_LIMIT = 1000


class Views:
    """The pages of one console over a journal and the configured routes."""

    def __init__(
        self,
        render: pages.Renderer,
        store: journal.Journal,
        router: routing.Router,
        *,
        tracing: settings_mod.Tracing,
        clock: Callable[[], float],
        settle_seconds: float,
    ) -> None:
        self.render = render
        self.clock = clock
        #: How long an attempt may run (the executor's lease): a bucket ended longer ago is complete.
        self.settle_seconds = settle_seconds
        #: Complete buckets of the overview's chart by start: route -> outcome -> attempts.
        self._settled: dict[float, dict[str, dict[str, int]]] = {}
        self.store = store
        self.router = router
        self.tracing = tracing
        self._closing = asyncio.Event()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/", self.overview)
        app.router.add_get("/events", self.events)
        app.router.add_get("/events/live", self.live)
        app.router.add_get("/events/{seq}", self.event)
        app.router.add_get("/routes", self.routes)
        app.router.add_post("/routes/{name}/pause", self.pause)
        app.router.add_post("/routes/{name}/resume", self.resume)
        app.router.add_post("/pause", self.pause)
        app.router.add_post("/resume", self.resume)
        app.router.add_get("/dead-letters", self.dead_letters)
        app.router.add_get("/dead-letters/{id}", self.dead_letter)
        app.router.add_post("/dead-letters/retry", self.dlq_retry)
        app.router.add_post("/dead-letters/purge", self.dlq_purge)
        app.router.add_get("/approvals", self.approvals)
        app.router.add_post("/approvals/{id}", self.decide)
        app.router.add_get("/audit", self.audit)
        app.on_shutdown.append(self._close)

    async def _close(self, _: web.Application) -> None:
        """The listener stops: live streams end now rather than hold the shutdown."""
        self._closing.set()

    def _actor(self, request: web.Request) -> operations.Actor:
        return operations.Actor(request[pages.WHO].name, self.clock)

    # -- overview

    async def overview(self, request: web.Request) -> web.StreamResponse:
        now = self.clock()
        slots, recent = await self._outcomes(now)
        oldest = await self.store.oldest_pending()
        waiting: collections.Counter[str] = collections.Counter()
        for (_, state, _), count in (await self.store.waiting()).items():
            waiting[state] += count
        gone = sorted({name for slot in slots for name in slot} - set(self.router.by_name))  # config changed
        per_route = {name: [slot.get(name, {}) for slot in slots] for name in [*self.router.by_name, *gone]}
        charts = [
            {
                "route": route,
                "total": sum((collections.Counter(slot) for slot in route_slots), collections.Counter()),
                "svg": svg.outcome_bars(
                    f"{route}: attempts by outcome, last hour", route_slots, bucket_minutes=int(BUCKET // 60)
                ),
            }
            for route, route_slots in per_route.items()
        ]
        figures = {
            "rate": recent.received / max((now - recent.since) / 60, 1 / 60),
            "rate_minutes": (now - recent.since) / 60,
            "backlog": await self.store.backlog(),
            "oldest": now - oldest if oldest is not None else None,
            "dead": await self.store.dead_letters(),
            "held": waiting["held"],
            "awaiting": waiting["awaiting-approval"],
        }
        return self.render.page(
            request, "overview.html", figures=figures, charts=charts, outcomes=svg.OUTCOME_ORDER
        )

    async def _outcomes(self, now: float) -> tuple[list[dict[str, dict[str, int]]], journal.Activity]:
        """The last hour's attempts by 5-minute bucket (aligned to the clock), route and outcome, and
        the activity of the buckets still open (its events received give the intake rate).

        An attempt is journaled when it ends, and runs at most ``settle_seconds``; a bucket that ended
        longer ago than that takes no more attempts, so it is read once and kept. Each overview then
        reads only the last few minutes, whatever the hour held."""
        end = (now // BUCKET + 1) * BUCKET
        starts = [end - BUCKET * (SLOTS - n) for n in range(SLOTS)]
        settled = max((now - self.settle_seconds) // BUCKET * BUCKET, starts[0])
        missing = [start for start in starts if start < settled and start not in self._settled]
        if missing:
            first, until = min(missing), max(missing) + BUCKET
            found = await self.store.activity(since=first, until=until, bucket_seconds=BUCKET)
            for start in missing:
                self._settled[start] = {}
            for route, outcome, index, count in found.outcomes:
                self._settled[first + index * BUCKET].setdefault(route, {})[outcome] = count
        for start in [start for start in self._settled if start < starts[0]]:
            del self._settled[start]
        recent = await self.store.activity(since=settled, until=end, bucket_seconds=BUCKET)
        open_slots: dict[float, dict[str, dict[str, int]]] = {}
        for route, outcome, index, count in recent.outcomes:
            open_slots.setdefault(settled + index * BUCKET, {}).setdefault(route, {})[outcome] = count
        return [self._settled.get(start) or open_slots.get(start, {}) for start in starts], recent

    # -- events

    def _filters(self, request: web.Request) -> dict[str, Any]:
        query = request.query
        found: dict[str, Any] = {}
        for name in ("type", "source", "subject"):
            value = query.get(name, "").strip()
            if len(value) > _FIELD_LIMIT:
                raise web.HTTPBadRequest(text=f"{name}: longer than {_FIELD_LIMIT} characters")
            found[name] = value or None
        status = query.get("status") or None
        if status is not None and status not in journal.EVENT_STATUSES:
            raise web.HTTPBadRequest(text=f"status: one of {', '.join(journal.EVENT_STATUSES)}")
        found["status"] = status
        for name in ("since", "until"):
            found[name] = _time(name, query.get(name, ""))
        return found

    async def events(self, request: web.Request) -> web.StreamResponse:
        filters = self._filters(request)
        before = _number("before", request.query.get("before")) if request.query.get("before") else None
        found = await self.store.browse(before=before, limit=PAGE + 1, **filters)
        shown = found[:PAGE]
        older = None
        if len(found) > PAGE:
            older = _with_query(request, before=str(shown[-1].seq))
        form = {name: request.query.get(name, "") for name in ("type", "source", "subject", "since", "until")}
        return self.render.page(
            request,
            "events.html",
            events=shown,
            form=form,
            chosen=filters["status"],
            statuses=journal.EVENT_STATUSES,
            older=older,
            newest=before is None,
            after=await self._newest() if before is None else 0,
            query=request.query_string,
        )

    async def _newest(self) -> int:
        """The newest event's seq: the live stream starts after it, whatever the page's filters show."""
        newest = await self.store.browse(limit=1)
        return newest[0].seq if newest else 0

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each event journaled after ``after`` that passes the page's filters."""
        filters = self._filters(request)
        after = _number("after", request.query.get("after", "0"))
        stream = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await stream.prepare(request)
        matches = _matcher(filters)
        while not self._closing.is_set():
            for stored in await self.store.list(after=after, limit=200):
                after = stored.seq
                if matches(stored):
                    row = {**stored.summary(), "receivedAt": pages.iso(stored.received_at)}
                    await stream.write(b"event: journaled\ndata: " + orjson.dumps(row) + b"\n\n")
            await stream.write(b": alive\n\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), POLL)
        return stream

    async def event(self, request: web.Request) -> web.StreamResponse:
        seq = _number("event", request.match_info["seq"])
        stored = await self.store.get(seq)
        if stored is None:
            raise web.HTTPNotFound(text=f"no event {seq} in the journal")
        invocations = await self.store.invocations(event_seq=stored.seq, limit=1000)
        detail = await operations.with_delivery(self.store, stored)
        cloudevent = detail["cloudevent"]
        data = {key: cloudevent[key] for key in ("data", "data_base64") if key in cloudevent}
        attributes = {key: value for key, value in cloudevent.items() if key not in data}
        return self.render.page(
            request,
            "event.html",
            stored=stored,
            attributes=attributes,
            data=data,
            delivery=detail["delivery"],
            decisions=explain.stored_rows(self.router, stored, invocations),
            invocations=[await operations.invocation_detail(self.store, item) for item in invocations],
            trace=explain.trace_fields(self.tracing, stored.event()),
        )

    # -- routes

    async def routes(self, request: web.Request) -> web.StreamResponse:
        now = self.clock()
        rows = await operations.routes_list(self.store, self.router, now)
        everything = (await self.store.rails()).get(rails.GLOBAL)
        paused_all = everything is not None and everything.paused_at(now)
        return self.render.page(
            request,
            "routes.html",
            routes=rows,
            states=operations.STATES,
            paused_all=paused_all,
            everything=everything,
        )

    async def pause(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        seconds = None
        if form.get("for"):
            try:
                seconds = rails.parse_duration(str(form["for"]))
            except ValueError as exc:
                raise web.HTTPBadRequest(text=f"for: {exc}") from None
        reason = str(form.get("reason") or "") or None
        route = request.match_info.get("name", rails.GLOBAL)
        await operations.pause(
            self.store, self.router, route, self._actor(request), reason=reason, seconds=seconds
        )
        raise web.HTTPSeeOther(f"{self.render.prefix}/routes")

    async def resume(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info.get("name", rails.GLOBAL)
        await operations.resume(self.store, self.router, route, self._actor(request))
        raise web.HTTPSeeOther(f"{self.render.prefix}/routes")

    # -- dead letters

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        route = request.query.get("route") or None
        since = _time("since", request.query.get("since", ""))
        found = await operations.dead_letters(self.store, route=route, since=since, limit=PAGE)
        return self.render.page(
            request,
            "dead_letters.html",
            rows=await operations.dead_letter_rows(self.store, found),
            route=route or "",
            since=request.query.get("since", ""),
            routes=sorted(self.router.by_name),
            done=request.query.get("done"),
        )

    async def dead_letter(self, request: web.Request) -> web.StreamResponse:
        number = _number("invocation", request.match_info["id"])
        item = await self.store.invocation(number)
        if item is None:
            raise web.HTTPNotFound(text=f"no invocation {number}")
        stored = await self.store.get(item.event_seq)
        return self.render.page(
            request,
            "dead_letter.html",
            item=await operations.invocation_detail(self.store, item),
            stored=stored,
        )

    async def _dlq_change(self, request: web.Request, verb: operations.DlqAction) -> web.StreamResponse:
        form = await request.post()
        ids = [_number("id", str(value)) for value in form.getall("id", [])]
        route = str(form.get("route") or "") or None
        if not ids and route is None:
            raise web.HTTPBadRequest(text="choose dead letters by id or by route")
        if form.get("confirm") != "yes":
            found = await operations.dead_letters(self.store, ids=ids, route=route)
            return self.render.page(
                request,
                "confirm.html",
                verb=verb,
                rows=await operations.dead_letter_rows(self.store, found),
                ids=ids,
                route=route or "",
            )
        done = operations.DLQ_DONE[verb]
        result = await operations.dlq_change(self.store, self._actor(request), verb, ids=ids, route=route)
        raise web.HTTPSeeOther(f"{self.render.prefix}/dead-letters?done={done}+{len(result[done])}")

    async def dlq_retry(self, request: web.Request) -> web.StreamResponse:
        return await self._dlq_change(request, "retry")

    async def dlq_purge(self, request: web.Request) -> web.StreamResponse:
        return await self._dlq_change(request, "purge")

    # -- approvals

    async def approvals(self, request: web.Request) -> web.StreamResponse:
        waiting = await self.store.invocations(state="awaiting-approval", limit=500)
        return self.render.page(request, "approvals.html", waiting=waiting, done=request.query.get("done"))

    async def decide(self, request: web.Request) -> web.StreamResponse:
        number = _number("invocation", request.match_info["id"])
        form = await request.post()
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            raise web.HTTPBadRequest(text="decision: approve or deny")
        note = str(form.get("note") or "").strip() or None
        await operations.approve(
            self.store, number, self._actor(request), yes=decision == "approve", note=note
        )
        raise web.HTTPSeeOther(f"{self.render.prefix}/approvals?done={decision}d+{number}")

    # -- audit

    async def audit(self, request: web.Request) -> web.StreamResponse:
        route = request.query.get("route") or None
        since = _time("since", request.query.get("since", "")) or self.clock() - 30 * 86400
        entries = await operations.audit_entries(self.store, since=since, route=route, limit=5000)
        return self.render.page(
            request,
            "audit.html",
            entries=entries[::-1][:500],
            route=route or "",
            since=request.query.get("since", ""),
        )


def _number(name: str, text: str | None) -> int:
    """A journal id or seq from the request: a positive 64-bit number, else 400."""
    try:
        number = int(text or "")
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected a number, not {text!r}") from None
    if not 0 <= number < 1 << 63:
        raise web.HTTPBadRequest(text=f"{name}: out of range")
    return number


def _time(name: str, text: str) -> float | None:
    """A time from a form: ISO-8601 (a browser's ``datetime-local`` value), UTC when it names no zone."""
    text = text.strip()
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected a time like 2026-12-03T08:00 (UTC)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _with_query(request: web.Request, **changes: str) -> str:
    return str(request.rel_url.update_query(changes))


def _matcher(filters: dict[str, Any]) -> Callable[[journal.StoredEvent], bool]:
    """Whether a journaled event passes the events page's filters (for the live stream)."""

    def matches(stored: journal.StoredEvent) -> bool:
        return (
            all(
                filters[name] is None or getattr(stored, name) == filters[name]
                for name in ("type", "source", "subject", "status")
            )
            and (filters["since"] is None or stored.received_at >= filters["since"])
            and (filters["until"] is None or stored.received_at < filters["until"])
        )

    return matches
