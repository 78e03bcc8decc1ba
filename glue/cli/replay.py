"""Operator commands over routes and the journal: ``glue explain``, ``glue replay``, ``glue dlq``.

- ``explain``: for each route, matched or not; when not, the sub-expression that was false and the
  values it saw; when matched, the rendered params or the error. Input: a payload decoded with
  ``--format``, a file of CloudEvents, or ``--event`` (an event in the journal, with what ran for it).
- ``replay``: a recording (JSON lines of raw deliveries, as ``glue run --record`` writes them), a file
  of CloudEvents, the journal itself (``journal``), or recordings archived in a bucket
  (``s3://bucket/prefix``, see :mod:`glue.objectstore`). With ``--dry-run`` it prints the plan of every
  handler that would run, exactly as a live ``dryRun`` route computes it; without, it journals the
  deliveries through the same decoders as live traffic (duplicates are recognised and skipped).

Output is a table on a terminal and JSON lines otherwise (see :func:`glue.common.emit`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from glue import contract, events, execution, explain, formats, intake, journal, routing
from glue import settings as settings_mod
from glue.cli import common
from glue.execution import preview

__all__ = ["add_commands"]


def _router(settings: settings_mod.Settings, args: argparse.Namespace) -> routing.Router:
    from glue import app

    app.load_plugins(settings)
    source = common.config_path(args) or "<defaults>"
    try:
        return routing.load(settings.routes, contract.registry, source=source)
    except settings_mod.ConfigError as exc:
        raise common.CliError(str(exc), code=2) from None


def _options(settings: settings_mod.Settings, delivery: events.Delivery) -> formats.Options:
    """The decoder options of the endpoint or topic a recorded delivery came in on."""
    for endpoint in settings.endpoints:
        if endpoint.name == delivery.endpoint:
            return formats.Options.of(endpoint)
    kafka = getattr(settings.sources, "kafka", None)
    for topic in getattr(kafka, "topics", None) or []:
        if topic.name == delivery.endpoint:
            return formats.Options.of(topic)
    stream = settings.sources.jetstream
    if stream is not None and delivery.transport == "jetstream" and delivery.endpoint == stream.stream:
        entry = stream.entry_for(delivery.headers.get("nats-subject", ""))
        if entry is not None:
            return formats.Options.of(entry)
    return formats.Options()


class Item:
    """One event to explain or replay, with where it came from (for messages)."""

    __slots__ = ("delivery", "event", "origin", "received_at")

    def __init__(
        self,
        event: events.CloudEvent | None,
        origin: str,
        received_at: float | None,
        delivery: events.Delivery | None = None,
    ) -> None:
        self.event = event
        self.origin = origin
        self.received_at = received_at
        self.delivery = delivery


def _lines(path: str, settings: settings_mod.Settings | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.startswith("s3://"):
        yield from _archive_lines(path, settings)
        return
    raw = common.read_input(path)
    stripped = raw.strip()
    if stripped.startswith(b"{") and b"\n" in stripped:
        try:  # one pretty-printed JSON document rather than JSON lines
            yield 1, orjson.loads(stripped)
            return
        except orjson.JSONDecodeError:
            pass
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise common.CliError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise common.CliError(f"{path}:{number}: expected a JSON object")
        yield number, document


def _archive_lines(url: str, settings: settings_mod.Settings | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The lines of an archive in a bucket (``archive.recordings`` writes them), numbered across objects."""
    if settings is None or settings.sources.minio is None:
        raise common.CliError(f"{url}: reading a bucket needs sources.minio in the config", code=2)
    from glue import objectstore  # the minio SDK is loaded only when a bucket is read

    store = objectstore.ObjectStore(settings.sources.minio)
    try:
        for number, (_, document) in enumerate(objectstore.iter_archive(store, url), start=1):
            yield number, document
    except objectstore.ObjectStoreError as exc:
        raise common.CliError(str(exc)) from None
    finally:
        store.close()


def read_items(path: str, settings: settings_mod.Settings) -> Iterator[Item]:
    """Events from a recording (raw deliveries, decoded again) or a file of structured CloudEvents.

    A line that does not decode yields an Item without event (reported, not fatal)."""
    for number, document in _lines(path, settings):
        origin = f"{path}:{number}"
        if "specversion" in document:
            try:
                event = events.from_json(orjson.dumps(document))
            except Exception as exc:  # the SDK raises several types for invalid events
                yield Item(None, f"{origin}: not a valid CloudEvent: {exc}", None)
                continue
            yield Item(event, origin, None)
            continue
        try:
            delivery = events.Delivery.from_record(document)
        except (KeyError, ValueError, TypeError) as exc:
            yield Item(None, f"{origin}: not a recorded delivery: {exc}", None)
            continue
        try:
            batch = formats.decode(delivery, _options(settings, delivery))
        except formats.DecodeError as exc:
            yield Item(None, f"{origin}: does not decode: {exc.reason}", delivery.received_at, delivery)
            continue
        for event in batch:
            yield Item(event, origin, delivery.received_at, delivery)


async def journal_items(store: journal.Journal, since: float | None) -> AsyncIterator[Item]:
    after = 0
    while True:
        rows = await store.list(after=after, limit=500)
        if not rows:
            return
        for row in rows:
            after = row.seq
            if since is not None and row.received_at < since:
                continue
            yield Item(row.event(), f"journal seq {row.seq}", row.received_at)


# -- explain ---------------------------------------------------------------------------------------


def cmd_explain(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)
    router = _router(settings, args)
    if args.event is not None:
        return asyncio.run(
            common.with_journal(settings, lambda store: _explain_stored(store, settings, router, args))
        )
    if args.file is None:
        raise common.CliError("give a FILE or --event", code=2)
    if args.format is not None:
        delivery = events.Delivery(
            transport="cli",
            endpoint="cli",
            format=args.format,
            headers=common.parse_headers(args.header),
            body=common.read_input(args.file),
        )
        try:
            batch = formats.decode(delivery, _options(settings, delivery))
        except formats.DecodeError as exc:
            raise common.CliError(f"{args.file}: {exc.reason} (HTTP {exc.status})") from None
        items = [Item(event, args.file, None) for event in batch]
    else:
        items = list(read_items(args.file, settings))
    rows: list[dict[str, Any]] = []
    for item in items:
        if item.event is None:
            print(f"glue: {item.origin}", file=sys.stderr)
            continue
        decisions = router.decide(item.event, explain=True, only=args.route)
        rows.extend(explain.decision_row(item.event, decision) for decision in decisions)
    common.emit(rows, ["event", "route", "handler", "matched", "why", "params"])
    return 0


async def _explain_stored(
    store: journal.Journal, settings: settings_mod.Settings, router: routing.Router, args: argparse.Namespace
) -> int:
    stored = await store.get(args.event)
    if stored is None:
        raise common.CliError(f"no event {args.event!r} in the journal")
    invocations = await store.invocations(event_seq=stored.seq, limit=1000)
    trace = explain.trace_fields(settings.tracing, stored.event())
    rows = [{**row, **trace} for row in explain.stored_rows(router, stored, invocations, only=args.route)]
    common.emit(
        rows,
        [
            *("event", "route", "handler", "matched", "why", "state", "waitReason", "invocation"),
            *("takenBy", "waiting", "traceId"),
        ],
    )
    return 0


# -- replay ----------------------------------------------------------------------------------------


def _decided(router: routing.Router, item: Item, routes: list[str] | None) -> list[routing.Decision]:
    """The routes that match ``item`` and are enabled."""
    assert item.event is not None
    return [d for d in router.decide(item.event, only=routes) if d.matched and d.enabled]


def _shape(
    router: routing.Router, decided: list[tuple[Item, list[routing.Decision]]]
) -> dict[tuple[int, str], preview.Shaped]:
    """What flow shaping makes of every matched route's invocation of the recording, by (item's
    position, route): only routes that shape are looked at (the others simply run)."""
    shaping = {
        r.name
        for r in router.routes
        if r.route.coalesce is not None or r.route.group is not None or r.route.rate_limit is not None
    }
    where: list[tuple[int, str]] = []
    arrivals: list[preview.Arrival] = []
    for position, (item, decisions) in enumerate(decided):
        assert item.event is not None
        for decision in decisions:
            if decision.route in shaping and decision.params_error is None:
                at = item.received_at if item.received_at is not None else float(position)
                arrivals.append(preview.Arrival(item.event.get_id(), at, decision))
                where.append((position, decision.route))
    return dict(zip(where, preview.preview(router, arrivals), strict=True))


async def _plans(
    router: routing.Router,
    item: Item,
    decisions: list[routing.Decision],
    clients: contract.Clients,
    shaped: dict[str, preview.Shaped],
) -> list[dict[str, Any]]:
    assert item.event is not None
    identity = events.identity(item.event)
    rows: list[dict[str, Any]] = []
    for decision in decisions:
        row: dict[str, Any] = {
            "event": item.event.get_id(),
            "source": item.event.get_source(),
            "route": decision.route,
            "handler": decision.handler,
        }
        if decision.params_error is not None:
            rows.append({**row, "outcome": "dead", "error": decision.params_error})
            continue
        shape = shaped.get(decision.route)
        if shape is not None:
            row["shaping"] = shape.note
            if shape.outcome != "runs":  # nothing runs for it: no plan
                rows.append({**row, "outcome": shape.outcome, "takenBy": shape.by})
                continue
            if len(shape.events) > 1:
                row["events"] = shape.events
        compiled = router.by_name[decision.route]
        attempt = await execution.plan(
            compiled, item.event, decision.params or {}, identity=identity, clients=clients
        )
        if attempt.plan is not None:
            rows.append(
                {**row, "outcome": "planned", "params": decision.params, "plan": attempt.plan.to_dict()}
            )
        else:
            rows.append({**row, "outcome": attempt.outcome, "error": attempt.error})
    return rows


class _Pace:
    """At most ``rate`` events per second (None: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        delay = self.next - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.next = max(self.next, time.monotonic()) + self.interval


def cmd_replay(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)
    since = common.parse_since(args.since)
    if args.rate is not None and args.rate <= 0:
        raise common.CliError("--rate must be positive", code=2)
    if args.source == "journal" and not args.dry_run:
        raise common.CliError(
            "replaying the journal into itself changes nothing (events are deduplicated);"
            " use --dry-run to see plans, or `glue dlq retry` to run dead-lettered work again",
            code=2,
        )
    if args.dry_run:
        router = _router(settings, args)
        unknown = [r for r in args.route or [] if r not in router.by_name]
        if unknown:
            raise common.CliError(f"--route: no route named {', '.join(map(repr, unknown))}", code=2)
        return asyncio.run(_replay_plans(settings, router, args, since))
    return asyncio.run(_replay_into_journal(settings, args, since))


async def _replay_plans(
    settings: settings_mod.Settings, router: routing.Router, args: argparse.Namespace, since: float | None
) -> int:
    clients = contract.Clients(contract.registry, settings.clients)
    pace = _Pace(args.rate)
    rows: list[dict[str, Any]] = []
    problems = 0
    seen: dict[str, str] = {}  # identity -> where it was first seen: the journal's dedup, in memory

    async def take(item: Item) -> None:
        nonlocal problems
        if item.event is None:
            print(f"glue: {item.origin}", file=sys.stderr)
            problems += 1
            return
        if since is not None and item.received_at is not None and item.received_at < since:
            return
        identity = events.identity(item.event)
        first = seen.get(identity)
        if first is not None:  # a resend: the daemon journals it once and acts once
            duplicates.setdefault(len(accepted), []).append(
                {
                    "event": item.event.get_id(),
                    "source": item.event.get_source(),
                    "outcome": "duplicate",
                    "error": f"already delivered at {first}: the journal keeps one, nothing runs again",
                }
            )
            return
        seen[identity] = item.origin
        accepted.append((item, _decided(router, item, args.route)))

    accepted: list[tuple[Item, list[routing.Decision]]] = []
    duplicates: dict[int, list[dict[str, Any]]] = {}  # by the position of the event that follows them
    try:
        if args.source == "journal":
            async with common.opened_journal(settings) as store:
                async for item in journal_items(store, since):
                    await take(item)
        else:
            for item in read_items(args.source, settings):
                await take(item)
        shaped = _shape(router, accepted)
        for position, (item, decisions) in enumerate(accepted):
            rows.extend(duplicates.pop(position, []))
            await pace.wait()
            mine = {route: shape for (at, route), shape in shaped.items() if at == position}
            rows.extend(await _plans(router, item, decisions, clients, mine))
        rows.extend(row for position in sorted(duplicates) for row in duplicates[position])
    finally:
        await clients.aclose()
    out = sys.stdout
    if out.isatty():
        table = [
            {
                **row,
                "calls": "; ".join(
                    f"{c['method']} {c['target']}" for c in row.get("plan", {}).get("calls", [])
                )
                or row.get("error", ""),
            }
            for row in rows
        ]
        common.emit(table, ["event", "route", "handler", "outcome", "shaping", "calls"], out)
    else:
        common.emit(rows, [], out)
    return 1 if problems else 0


async def _replay_into_journal(
    settings: settings_mod.Settings, args: argparse.Namespace, since: float | None
) -> int:
    from glue import app, pipeline  # the daemon's parts are loaded only when a replay journals

    tracing = app.start_tracing(settings.tracing)  # a recorded traceparent header is continued
    try:
        async with common.opened_journal(settings) as store:
            gate = pipeline.make_intake(store, max_backlog=settings.server.max_backlog, tracing=tracing)
            counts = await _journal_lines(settings, args, since, gate)
    finally:
        if tracing is not None:
            await tracing.stop()
    print(
        f"{counts['deliveries']} deliveries replayed: {counts['new']} new events journaled,"
        f" {counts['duplicate']} already journaled, {counts['failed']} failed"
    )
    return 1 if counts["failed"] else 0


async def _journal_lines(
    settings: settings_mod.Settings, args: argparse.Namespace, since: float | None, gate: intake.Intake
) -> dict[str, int]:
    """Journal the deliveries of ``args.source`` through intake; counts of what became of them."""
    pace = _Pace(args.rate)
    counts = {"deliveries": 0, "new": 0, "duplicate": 0, "failed": 0}
    for number, document in _lines(args.source, settings):
        if "specversion" in document:
            delivery = events.Delivery(
                transport="replay",
                endpoint="replay",
                format="cloudevents",
                headers={"content-type": "application/cloudevents+json"},
                body=orjson.dumps(document),
            )
        else:
            try:
                delivery = events.Delivery.from_record(document)
            except (KeyError, ValueError, TypeError) as exc:
                print(f"glue: {args.source}:{number}: not a recorded delivery: {exc}", file=sys.stderr)
                counts["failed"] += 1
                continue
        if since is not None and delivery.received_at < since:
            continue
        await pace.wait()
        try:
            appended = await gate.accept(delivery, _options(settings, delivery))
        except formats.DecodeError as exc:
            print(f"glue: {args.source}:{number}: does not decode: {exc.reason}", file=sys.stderr)
            counts["failed"] += 1
            continue
        except (intake.Overloaded, journal.JournalUnavailable) as exc:
            raise common.CliError(f"{args.source}:{number}: journal: {exc}") from None
        counts["deliveries"] += 1
        counts["new"] += sum(1 for a in appended if a.new)
        counts["duplicate"] += sum(1 for a in appended if not a.new)
    return counts


def add_commands(sub: Any) -> None:
    """Add ``explain`` and ``replay`` to the ``glue`` parser's subcommands."""
    config = common.config_arg

    p = sub.add_parser("explain", help="why each route did (not) match an event, with the values it saw")
    config(p)
    p.add_argument(
        "file", nargs="?", metavar="FILE", help="a payload (with --format) or a file of CloudEvents"
    )
    p.add_argument(
        "--format", "-f", choices=sorted(formats.DECODERS), help="decode FILE as this format first"
    )
    p.add_argument("--header", "-H", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--event", "-e", metavar="EVENT", help="an event in the journal (seq, id or identity)")
    p.add_argument("--route", "-r", action="append", metavar="ROUTE", help="only this route (repeatable)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("replay", help="run recorded deliveries or CloudEvents through the routes again")
    config(p)
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a recording, a file of CloudEvents, 'journal', or s3://bucket/prefix (archived recordings)",
    )
    p.add_argument("--dry-run", "-n", action="store_true", help="print every handler's plan; change nothing")
    p.add_argument("--route", "-r", action="append", metavar="ROUTE", help="only this route (repeatable)")
    p.add_argument(
        "--since", metavar="T", help="only events received since T (unix s, ISO-8601, or 2h/7d ago)"
    )
    p.add_argument("--rate", type=float, metavar="N", help="at most N events per second")
    p.set_defaults(func=cmd_replay)
