"""``glue dlq list|show|retry|purge|rejected``: the dead-letter queue; ``retry`` and ``purge`` take ids
or a filter and show what would go with ``--dry-run``. With ``glue --server URL`` each acts on a remote
daemon through its admin API (``rejected`` reads the local journal only)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from glue import journal, observability, operations
from glue.cli import common

__all__ = ["add_commands"]

_DLQ_COLUMNS = ["id", "route", "handler", "event", "type", "attempt", "deadAt", "lastError"]


def _local(args: argparse.Namespace, fn: Callable[[journal.Journal], Awaitable[Any]]) -> Any:
    """``fn(store)`` on the configured journal; an operation's error is a CLI error."""
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> Any:
        try:
            return await fn(store)
        except operations.OperationError as exc:
            raise common.CliError(str(exc), code=2 if exc.status == 400 else 1) from None

    return asyncio.run(common.with_journal(settings, run))


def _query(args: argparse.Namespace, since: float | None) -> str:
    """The admin API's query for the selection ``args`` names (ids or route and since, and a limit)."""
    params = {
        "ids": ",".join(map(str, args.ids)) or None,
        "route": args.route,
        "since": since,
        "limit": args.limit,
    }
    query = urllib.parse.urlencode({name: value for name, value in params.items() if value is not None})
    return "/v1/dlq" + (f"?{query}" if query else "")


def _dead_rows(args: argparse.Namespace, since: float | None) -> list[dict[str, Any]]:
    if args.server:
        rows: list[dict[str, Any]] = common.remote(args, "GET", _query(args, since))
        return rows

    async def run(store: journal.Journal) -> list[dict[str, Any]]:
        selected = await operations.dead_letters(
            store, ids=args.ids, route=args.route, since=since, limit=args.limit
        )
        return await operations.dead_letter_rows(store, selected)

    rows = _local(args, run)
    return rows


def cmd_dlq_list(args: argparse.Namespace) -> int:
    common.emit(_dead_rows(args, common.parse_since(args.since)), _DLQ_COLUMNS)
    return 0


def cmd_dlq_show(args: argparse.Namespace) -> int:
    if args.server:
        common.show(common.remote(args, "GET", f"/v1/invocations/{args.id}"))
        return 0

    async def run(store: journal.Journal) -> dict[str, Any]:
        item = await store.invocation(args.id)
        if item is None:
            raise common.CliError(f"no invocation {args.id}")
        stored = await store.get(item.event_seq)
        result = await operations.invocation_detail(store, item)
        if stored is not None:
            result.update(await operations.with_delivery(store, stored))
        return result

    common.show(_local(args, run))
    return 0


def _cmd_dlq_change(args: argparse.Namespace, action: operations.DlqAction) -> int:
    since = common.parse_since(args.since)
    verb = operations.DLQ_DONE[action]
    if not (args.ids or args.route or since is not None or args.all):
        raise common.CliError("give invocation ids, or a filter (--route, --since) or --all", code=2)
    if args.dry_run:
        rows = _dead_rows(args, since)
        common.emit(rows, _DLQ_COLUMNS)
        print(f"{len(rows)} invocations would be {verb} (dry run)", file=sys.stderr)
        return 0
    if args.server:
        body = {"ids": args.ids or [], "route": args.route, "since": since, "all": args.all}
        result = common.remote(args, "POST", f"/v1/dlq/{action}", body)
    else:
        actor = operations.Actor(common.operator(), time.time)
        result = _local(
            args,
            lambda store: operations.dlq_change(
                store, actor, action, ids=args.ids or (), route=args.route, since=since, everything=args.all
            ),
        )
        # An operator action on this machine's journal: one JSON line on stderr (stdout carries the
        # result), as the daemon logs the same action taken through its admin API.
        line = observability.render_json(
            None,
            "warning",
            {
                "event": f"dead letters {verb}",
                "operator": actor.who,
                "invocations": result[verb],
                "routes": result["routes"],
                "filter": {
                    "route": args.route,
                    "since": args.since,
                    "all": args.all,
                    "ids": args.ids or None,
                },
            },
        )
        sys.stderr.write(line.decode() + "\n")
    print(f"{len(result[verb])} invocations {verb}")
    return 0


_REJECTED_COLUMNS = ["delivery", "transport", "endpoint", "format", "receivedAt", "reason"]


def cmd_dlq_rejected(args: argparse.Namespace) -> int:
    """Deliveries that could not be decoded (Kafka poison records), newest first, with their raw bytes."""
    if args.server:
        raise common.CliError("dlq rejected reads the journal: run it without --server", code=2)

    async def run(store: journal.Journal) -> list[dict[str, Any]]:
        return [
            {
                "delivery": item.delivery_id,
                "transport": item.delivery.transport,
                "endpoint": item.delivery.endpoint,
                "format": item.delivery.format,
                "receivedAt": item.delivery.received_at,
                "reason": item.reason,
                "record": item.delivery.to_record(),  # JSON output only: replayable as a recording line
            }
            for item in await store.rejected(limit=args.limit)
        ]

    common.emit(_local(args, run), _REJECTED_COLUMNS)
    return 0


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    return _cmd_dlq_change(args, "retry")


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    return _cmd_dlq_change(args, "purge")


def add_commands(sub: Any) -> None:
    config = common.config_arg

    p = sub.add_parser("dlq", help="the dead-letter queue: list, show, retry, purge")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    q = dlq_sub.add_parser("list", help="dead-lettered invocations")
    config(q)
    q.add_argument("--route", "-r")
    q.add_argument("--since", metavar="T")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(func=cmd_dlq_list, ids=[])
    q = dlq_sub.add_parser("rejected", help="deliveries that could not be decoded (Kafka poison records)")
    config(q)
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(func=cmd_dlq_rejected)
    q = dlq_sub.add_parser("show", help="one invocation with its params, event and raw delivery")
    config(q)
    q.add_argument("id", type=int, metavar="ID")
    q.set_defaults(func=cmd_dlq_show)
    for name, func, verb in (("retry", cmd_dlq_retry, "run again"), ("purge", cmd_dlq_purge, "delete")):
        q = dlq_sub.add_parser(name, help=f"{verb} dead-lettered invocations (ids or a filter)")
        config(q)
        q.add_argument("ids", nargs="*", type=int, metavar="ID")
        q.add_argument("--route", "-r")
        q.add_argument("--since", metavar="T")
        q.add_argument("--all", action="store_true", help="every dead-lettered invocation")
        q.add_argument("--dry-run", "-n", action="store_true", help="show what would go; change nothing")
        q.set_defaults(func=func, limit=None)
