"""Commands that read and maintain the journal: ``glue events``, ``glue journal``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, BinaryIO

from glue import explain, journal, operations
from glue.cli import common

__all__ = ["add_commands"]


def cmd_events_list(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        rows = await store.list(limit=args.limit, after=args.after, status=args.status, type=args.type)
        common.emit((row.summary() for row in rows), ["seq", "id", "type", "source", "subject", "status"])
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_events_show(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        stored = await store.get(args.event)
        if stored is None:
            raise common.CliError(f"no event {args.event!r} in the journal")
        invocations = await store.invocations(event_seq=stored.seq, limit=1000)
        common.show(
            {
                **stored.summary(),
                "identity": stored.identity,
                **explain.trace_fields(settings.tracing, stored.event()),
                **await operations.with_delivery(store, stored),
                # each route's invocation: its state, why it waits when it does (waitReason), its plan
                # and every attempt
                "invocations": [await operations.invocation_detail(store, item) for item in invocations],
            }
        )
        return 0

    return asyncio.run(common.with_journal(settings, run))


_INVOCATION_COLUMNS = ["id", "eventSeq", "route", "handler", "state", "attempt", "updatedAt", "lastError"]


def cmd_events_invocations(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        rows = await store.invocations(state=args.state, route=args.route, after=args.after, limit=args.limit)
        common.emit((row.summary() for row in rows), _INVOCATION_COLUMNS)
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_journal_migrate(args: argparse.Namespace) -> int:
    from glue.journal import postgres, sqlite

    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:  # opening the journal migrates it
        if isinstance(store, postgres.PostgresJournal):
            version, applied = await store.schema_version(), store.applied
        else:
            version, applied = sqlite.SCHEMA_VERSION, []
        done = f"applied {', '.join(map(str, applied))}" if applied else "up to date"
        print(f"journal ({settings.journal.backend}): schema version {version}, {done}")
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_journal_export(args: argparse.Namespace) -> int:
    from glue.journal import transfer

    settings = common.load_settings(args)

    async def run(store: journal.Journal, out: BinaryIO) -> int:
        async for line in transfer.export(store):
            out.write(line)
        return 0

    try:
        if args.output == "-":
            return asyncio.run(common.with_journal(settings, lambda store: run(store, sys.stdout.buffer)))
        with open(args.output, "wb") as out:
            return asyncio.run(common.with_journal(settings, lambda store: run(store, out)))
    except OSError as exc:
        raise common.CliError(f"{args.output}: cannot write: {exc.strerror}", code=2) from None


def cmd_journal_import(args: argparse.Namespace) -> int:
    from glue.journal import transfer

    settings = common.load_settings(args)
    lines = common.read_input(args.file).splitlines()

    async def run(store: journal.Journal) -> int:
        try:
            counts = await transfer.load(store, transfer.parse(lines))
        except transfer.TransferError as exc:
            raise common.CliError(f"{args.file}: {exc}") from None
        names = {"audit": "audit entries", "rails": "routes' rails"}
        print(
            ", ".join(f"{count} {names.get(table, table)}" for table, count in counts.items()) + " imported"
        )
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_journal_prune(args: argparse.Namespace) -> int:

    from glue.journal import retention

    settings = common.load_settings(args)
    days = args.older_than_days if args.older_than_days is not None else settings.journal.retention_days

    async def run(store: journal.Journal) -> int:
        counts = await retention.prune(store, before=time.time() - days * 86400)
        print(", ".join(f"{count} {table}" for table, count in counts.items()) + " pruned")
        return 0

    return asyncio.run(common.with_journal(settings, run))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("events", help="read the journal")
    events_sub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    q = events_sub.add_parser("list", help="list journaled events")
    common.config_arg(q)
    q.add_argument("--status", choices=journal.EVENT_STATUSES, help="one of: %(choices)s")
    q.add_argument("--type")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--after", type=int, default=0, help="only events with a sequence number above this")
    q.set_defaults(func=cmd_events_list)
    q = events_sub.add_parser(
        "invocations", help="list invocations (one per event and matched route) with their state"
    )
    common.config_arg(q)
    q.add_argument("--state", choices=journal.INVOCATION_STATES, help="one of: %(choices)s")
    q.add_argument("--route", "-r")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--after", type=int, default=0, help="only invocations with an id above this")
    q.set_defaults(func=cmd_events_invocations)
    q = events_sub.add_parser(
        "show", help="one event with its raw delivery, its invocations and their attempts"
    )
    common.config_arg(q)
    q.add_argument("event", metavar="EVENT", help="sequence number, CloudEvent id or identity")
    q.set_defaults(func=cmd_events_show)

    p = sub.add_parser("journal", help="maintain the journal: migrate, export, import, prune")
    journal_sub = p.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    q = journal_sub.add_parser("migrate", help="create or upgrade the journal's schema (also done at start)")
    common.config_arg(q)
    q.set_defaults(func=cmd_journal_migrate)
    q = journal_sub.add_parser(
        "export",
        help="write the journal as JSON lines",
        epilog="From SQLite to PostgreSQL: glue journal export -c a.yaml | glue journal import -c b.yaml -",
    )
    common.config_arg(q)
    q.add_argument("--output", "-o", default="-", metavar="FILE", help="default: stdout")
    q.set_defaults(func=cmd_journal_export)
    q = journal_sub.add_parser("import", help="load an export into an empty journal (any backend)")
    common.config_arg(q)
    q.add_argument("file", metavar="FILE", help="an export, or - for stdin")
    q.set_defaults(func=cmd_journal_import)
    q = journal_sub.add_parser("prune", help="remove finished work older than journal.retentionDays now")
    common.config_arg(q)
    q.add_argument("--older-than-days", type=float, metavar="DAYS", help="instead of journal.retentionDays")
    q.set_defaults(func=cmd_journal_prune)
