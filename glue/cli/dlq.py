"""``glue dlq list|show|retry|purge|rejected``: the dead-letter queue; ``retry`` and ``purge`` take ids
or a filter and show what would go with ``--dry-run``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from glue import explain, journal, observability
from glue.cli import common

__all__ = ["add_commands"]


async def _dead_rows(store: journal.Journal, invocations: list[journal.Invocation]) -> list[dict[str, Any]]:
    rows = []
    for item in invocations:
        stored = await store.get(item.event_seq)
        rows.append(
            {
                **item.summary(),
                "event": stored.id if stored is not None else None,
                "type": stored.type if stored is not None else None,
                "deadAt": common.iso(item.updated_at),
            }
        )
    return rows


_DLQ_COLUMNS = ["id", "route", "handler", "event", "type", "attempt", "deadAt", "lastError"]


async def _select(store: journal.Journal, args: argparse.Namespace) -> list[journal.Invocation]:
    since = common.parse_since(getattr(args, "since", None))
    ids = [int(i) for i in getattr(args, "ids", None) or []]
    if ids:
        found = [await store.invocation(i) for i in ids]
        missing = [i for i, row in zip(ids, found, strict=True) if row is None or row.state != "dead"]
        if missing:
            raise common.CliError(f"not in the dead-letter queue: {', '.join(map(str, missing))}")
        return [row for row in found if row is not None]
    if hasattr(args, "all") and not (args.all or args.route or since is not None):
        raise common.CliError("give invocation ids, or a filter (--route, --since) or --all", code=2)
    selected: list[journal.Invocation] = []
    after = 0
    limit = getattr(args, "limit", None)
    while True:
        batch = await store.invocations(state="dead", route=args.route, since=since, after=after, limit=500)
        if not batch:
            return selected
        selected.extend(batch)
        after = batch[-1].id
        if limit is not None and len(selected) >= limit:
            return selected[:limit]


def cmd_dlq_list(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        common.emit(await _dead_rows(store, await _select(store, args)), _DLQ_COLUMNS)
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_dlq_show(args: argparse.Namespace) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        item = await store.invocation(args.id)
        if item is None:
            raise common.CliError(f"no invocation {args.id}")
        stored = await store.get(item.event_seq)
        result = await explain.invocation_detail(store, item)
        if stored is not None:
            result.update(await explain.delivery_detail(store, stored))
        common.show(result)
        return 0

    return asyncio.run(common.with_journal(settings, run))


def _cmd_dlq_change(args: argparse.Namespace, verb: str) -> int:
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        selected = await _select(store, args)
        if args.dry_run:
            rows = await _dead_rows(store, selected)
            common.emit(rows, _DLQ_COLUMNS)
            print(f"{len(rows)} invocations would be {verb} (dry run)", file=sys.stderr)
            return 0
        ids = [item.id for item in selected]
        if verb == "retried":
            changed = await store.redrive(ids, now=time.time())
        else:
            changed = await store.purge(ids)
        # An operator action: one JSON line on stderr (stdout carries the result), as the daemon logs.
        line = observability.render_json(
            None,
            "warning",
            {
                "event": f"dead letters {verb}",
                "operator": common.operator(),
                "invocations": list(changed),
                "routes": sorted({item.route for item in selected if item.id in set(changed)}),
                "filter": {
                    "route": args.route,
                    "since": args.since,
                    "all": args.all,
                    "ids": args.ids or None,
                },
            },
        )
        sys.stderr.write(line.decode() + "\n")
        await store.record_audit(
            common.operator(),
            f"dlq {'retry' if verb == 'retried' else 'purge'}",
            route=args.route,
            target=",".join(map(str, changed)) or None,
            detail={"invocations": list(changed), "since": args.since, "all": args.all},
            now=time.time(),
        )
        print(f"{len(changed)} invocations {verb}")
        return 0

    return asyncio.run(common.with_journal(settings, run))


_REJECTED_COLUMNS = ["delivery", "transport", "endpoint", "format", "receivedAt", "reason"]


def cmd_dlq_rejected(args: argparse.Namespace) -> int:
    """Deliveries that could not be decoded (Kafka poison records), newest first, with their raw bytes."""
    settings = common.load_settings(args)

    async def run(store: journal.Journal) -> int:
        rows = [
            {
                "delivery": item.delivery_id,
                "transport": item.delivery.transport,
                "endpoint": item.delivery.endpoint,
                "format": item.delivery.format,
                "receivedAt": common.iso(item.delivery.received_at),
                "reason": item.reason,
                "record": item.delivery.to_record(),  # JSON output only: replayable as a recording line
            }
            for item in await store.rejected(limit=args.limit)
        ]
        common.emit(rows, _REJECTED_COLUMNS)
        return 0

    return asyncio.run(common.with_journal(settings, run))


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    return _cmd_dlq_change(args, "retried")


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    return _cmd_dlq_change(args, "purged")


def add_commands(sub: Any) -> None:
    config = common.config_arg

    p = sub.add_parser("dlq", help="the dead-letter queue: list, show, retry, purge")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    q = dlq_sub.add_parser("list", help="dead-lettered invocations")
    config(q)
    q.add_argument("--route", "-r")
    q.add_argument("--since", metavar="T")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(func=cmd_dlq_list)
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
        q.set_defaults(func=func)
