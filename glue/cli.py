"""Command line: ``glue run|check|decode|events ...``.

Every command that reads a config accepts ``--config F`` (default: $GLUE_CONFIG, else the built-in
defaults). Exit codes: 0 success, 1 the command's subject is wrong (a payload does not decode, an
event is not found), 2 the invocation or the configuration is wrong. Errors name the file, the field and
the reason; no command prints a stack trace for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from glue import events, formats, journal, observability
from glue import settings as settings_mod

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem to print as one line (or a few) and exit with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- helpers shared by commands --------------------------------------------------------------------


def config_path(args: argparse.Namespace) -> str | None:
    """The config file a command reads: ``--config``, else $GLUE_CONFIG, else None (the defaults)."""
    return getattr(args, "config", None) or os.environ.get("GLUE_CONFIG")


def load_settings(args: argparse.Namespace) -> settings_mod.Settings:
    path = config_path(args)
    try:
        return settings_mod.load(path)
    except settings_mod.ConfigError as exc:
        raise CliError(str(exc), code=2) from None


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}", code=2) from None


def emit(rows: Iterable[dict[str, Any]], columns: Sequence[str], out: TextIO | None = None) -> None:
    """A table on a terminal, JSON lines otherwise (for scripts and jq)."""
    out = out if out is not None else sys.stdout
    rows = list(rows)
    if not out.isatty():
        for row in rows:
            out.write(orjson.dumps(row, default=str).decode() + "\n")
        return
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col), *(len(line[i]) for line in cells)]) for i, col in enumerate(columns)]
    out.write("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for line in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


@contextlib.asynccontextmanager
async def opened_journal(settings: settings_mod.Settings) -> AsyncIterator[journal.Journal]:
    """The configured journal, open for the block; one that cannot be opened is a usage error (2)."""
    store = journal.create(settings.journal)
    try:
        await store.open()
    except journal.JournalUnavailable as exc:
        raise CliError(f"journal: {exc}", code=2) from None
    try:
        yield store
    finally:
        await store.close()


async def with_journal(
    settings: settings_mod.Settings, fn: Callable[[journal.Journal], Awaitable[int]]
) -> int:
    async with opened_journal(settings) as store:
        return await fn(store)


def show(document: dict[str, Any]) -> None:
    """One document for a reader: indented JSON."""
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


async def with_delivery(store: journal.Journal, stored: journal.StoredEvent) -> dict[str, Any]:
    """A journaled event's CloudEvent and the raw delivery it came in (None if pruned), for ``show``."""
    delivery = await store.delivery(stored.delivery_id)
    return {
        "cloudevent": orjson.loads(stored.cloudevent),
        "delivery": delivery.to_record() if delivery is not None else None,
    }


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {item!r}: expected 'Name: value'", code=2)
        headers[name.strip().lower()] = value.strip()
    return headers


# -- run / check -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from glue import app

    settings = load_settings(args)
    overrides: dict[str, Any] = {}
    if args.record:
        overrides["record"] = Path(args.record)
    if overrides:
        settings = settings.model_copy(update=overrides)
    observability.configure_logging(settings.logging)
    loop_factory = None
    if settings.server.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(app.run(settings))
    except settings_mod.ConfigError as exc:  # routes are compiled when the daemon starts
        raise CliError(str(exc), code=2) from None
    except journal.JournalUnavailable as exc:
        raise CliError(f"journal: {exc}", code=2) from None
    except OSError as exc:  # e.g. the port is taken
        raise CliError(f"cannot start: {exc.strerror or exc}", code=2) from None
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    source = config_path(args) or "<defaults>"
    from glue import app

    app.load_plugins(settings)
    from glue import handlers, routing

    try:  # CEL syntax, templates, unknown handlers, parameters their models reject
        routing.load(settings.routes, handlers.registry, source=source)
    except settings_mod.ConfigError as exc:
        raise CliError(str(exc), code=2) from None
    problems = handlers.registry.check_clients(settings.clients)
    if problems:
        raise CliError(str(settings_mod.ConfigError(source, problems)), code=2)
    print(f"{source}: ok ({len(settings.endpoints)} endpoints, {len(settings.routes)} routes)")
    return 0


def cmd_rbac(args: argparse.Namespace) -> int:
    import yaml

    from glue import app, handlers, rbac

    settings = load_settings(args)
    source = config_path(args) or "<defaults>"
    account: tuple[str, str] | None = None
    if args.service_account:
        namespace, _, name = args.service_account.partition("/")
        if not namespace or not name:
            raise CliError("--service-account must be NAMESPACE/NAME", code=2)
        account = (namespace, name)
    app.load_plugins(settings)
    try:
        objects = rbac.render(
            settings, handlers.registry, name=args.name, service_account=account, source=source
        )
    except settings_mod.ConfigError as exc:
        raise CliError(str(exc), code=2) from None
    if not objects:
        print("# the configured routes need no Kubernetes permissions")
        return 0
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


# -- decode ------------------------------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    body = read_input(args.file)
    headers = parse_headers(args.header)
    delivery = events.Delivery(
        transport=args.transport, endpoint="cli", format=args.format, headers=headers, body=body
    )
    try:
        batch = formats.decode(delivery, formats.Options.of(args))
    except formats.DecodeError as exc:
        raise CliError(f"{args.file}: {exc.reason} (HTTP {exc.status})") from None
    for event in batch:
        sys.stdout.write(events.to_json(event).decode() + "\n")
    return 0


# -- events ------------------------------------------------------------------------------------------


def cmd_events_list(args: argparse.Namespace) -> int:
    settings = load_settings(args)

    async def run(store: journal.Journal) -> int:
        rows = await store.list(limit=args.limit, after=args.after, status=args.status, type=args.type)
        emit((row.summary() for row in rows), ["seq", "id", "type", "source", "subject", "status"])
        return 0

    return asyncio.run(with_journal(settings, run))


def cmd_events_show(args: argparse.Namespace) -> int:
    settings = load_settings(args)

    async def run(store: journal.Journal) -> int:
        stored = await store.get(args.event)
        if stored is None:
            raise CliError(f"no event {args.event!r} in the journal")
        show({**stored.summary(), "identity": stored.identity, **await with_delivery(store, stored)})
        return 0

    return asyncio.run(with_journal(settings, run))


# -- journal: migrate, export, import, prune ------------------------------------------------------------


def cmd_journal_migrate(args: argparse.Namespace) -> int:
    from glue.journal import postgres, sqlite

    settings = load_settings(args)

    async def run(store: journal.Journal) -> int:  # opening the journal migrates it
        if isinstance(store, postgres.PostgresJournal):
            version, applied = await store.schema_version(), store.applied
        else:
            version, applied = sqlite.SCHEMA_VERSION, []
        done = f"applied {', '.join(map(str, applied))}" if applied else "up to date"
        print(f"journal ({settings.journal.backend}): schema version {version}, {done}")
        return 0

    return asyncio.run(with_journal(settings, run))


def cmd_journal_export(args: argparse.Namespace) -> int:
    from glue.journal import transfer

    settings = load_settings(args)

    async def run(store: journal.Journal, out: BinaryIO) -> int:
        async for line in transfer.export(store):
            out.write(line)
        return 0

    try:
        if args.output == "-":
            return asyncio.run(with_journal(settings, lambda store: run(store, sys.stdout.buffer)))
        with open(args.output, "wb") as out:
            return asyncio.run(with_journal(settings, lambda store: run(store, out)))
    except OSError as exc:
        raise CliError(f"{args.output}: cannot write: {exc.strerror}", code=2) from None


def cmd_journal_import(args: argparse.Namespace) -> int:
    from glue.journal import transfer

    settings = load_settings(args)
    lines = read_input(args.file).splitlines()

    async def run(store: journal.Journal) -> int:
        try:
            counts = await transfer.load(store, transfer.parse(lines))
        except transfer.TransferError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        print(", ".join(f"{count} {table}" for table, count in counts.items()) + " imported")
        return 0

    return asyncio.run(with_journal(settings, run))


def cmd_journal_prune(args: argparse.Namespace) -> int:
    import time

    from glue.journal import retention

    settings = load_settings(args)
    days = args.older_than_days if args.older_than_days is not None else settings.journal.retention_days

    async def run(store: journal.Journal) -> int:
        counts = await retention.prune(store, before=time.time() - days * 86400)
        print(", ".join(f"{count} {table}" for table, count in counts.items()) + " pruned")
        return 0

    return asyncio.run(with_journal(settings, run))


# -- parser ------------------------------------------------------------------------------------------


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config (default $GLUE_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glue", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    _config_arg(p)
    p.add_argument("--record", metavar="FILE", help="append every delivery to FILE as a replayable line")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate a config and exit")
    _config_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("rbac", help="print the least Role/ClusterRole the configured routes need, as YAML")
    _config_arg(p)
    p.add_argument(
        "--name", default="runtime-glue", help="name of the Role/ClusterRole (default: %(default)s)"
    )
    p.add_argument("--service-account", metavar="NAMESPACE/NAME", help="also print bindings to this account")
    p.set_defaults(func=cmd_rbac)

    p = sub.add_parser("decode", help="print the CloudEvents a payload decodes to, as JSON lines")
    p.add_argument("--format", "-f", required=True, choices=sorted(formats.DECODERS))
    p.add_argument("--header", "-H", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--type", help="argo: type for plain JSON bodies")
    p.add_argument("--source", help="argo/harbor: source for bodies without one")
    p.add_argument("--id-header", help="argo: header holding the event id")
    p.add_argument("--transport", default="http", help=argparse.SUPPRESS)
    p.add_argument("file", metavar="FILE", help="payload file, or - for stdin")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("events", help="read the journal")
    events_sub = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    q = events_sub.add_parser("list", help="list journaled events")
    _config_arg(q)
    q.add_argument("--status")
    q.add_argument("--type")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--after", type=int, default=0, help="only events with a sequence number above this")
    q.set_defaults(func=cmd_events_list)
    q = events_sub.add_parser("show", help="one event with its raw delivery")
    _config_arg(q)
    q.add_argument("event", metavar="EVENT", help="sequence number, CloudEvent id or identity")
    q.set_defaults(func=cmd_events_show)

    p = sub.add_parser("journal", help="maintain the journal: migrate, export, import, prune")
    journal_sub = p.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    q = journal_sub.add_parser("migrate", help="create or upgrade the journal's schema (also done at start)")
    _config_arg(q)
    q.set_defaults(func=cmd_journal_migrate)
    q = journal_sub.add_parser(
        "export",
        help="write the journal as JSON lines",
        epilog="From SQLite to PostgreSQL: glue journal export -c a.yaml | glue journal import -c b.yaml -",
    )
    _config_arg(q)
    q.add_argument("--output", "-o", default="-", metavar="FILE", help="default: stdout")
    q.set_defaults(func=cmd_journal_export)
    q = journal_sub.add_parser("import", help="load an export into an empty journal (any backend)")
    _config_arg(q)
    q.add_argument("file", metavar="FILE", help="an export, or - for stdin")
    q.set_defaults(func=cmd_journal_import)
    q = journal_sub.add_parser("prune", help="remove finished work older than journal.retentionDays now")
    _config_arg(q)
    q.add_argument("--older-than-days", type=float, metavar="DAYS", help="instead of journal.retentionDays")
    q.set_defaults(func=cmd_journal_prune)

    from glue import tools  # explain, replay, dlq

    tools.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"glue: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
