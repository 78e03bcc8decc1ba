"""Safety rails from the command line: ``glue routes list|pause|resume``, ``glue pause --all``,
``glue resume --all``, ``glue approve``, ``glue deny`` and ``glue audit``.

Each acts on the configured journal, which every replica reads (all obey within two seconds), or with
``glue --server URL`` on a remote daemon through its admin API (bearer token from ``--token-file`` or
$GLUE_ADMIN_TOKEN). Every change is recorded in the audit trail with the OS user as who.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from glue import contract, journal, operations, rails, routing
from glue import settings as settings_mod
from glue.cli import common

__all__ = ["add_commands"]

_ROUTE_COLUMNS = [
    "route",
    "state",
    "why",
    "pending",
    "running",
    "held",
    "awaiting-approval",
    "done",
    "planned",
    "dead",
    "budget",
    "breaker",
    "nextWindow",
]
_AUDIT_COLUMNS = ["id", "at", "who", "action", "route", "target", "reason"]


def _actor() -> operations.Actor:
    return operations.Actor(common.operator(), time.time)


def _router(settings: settings_mod.Settings, args: argparse.Namespace) -> routing.Router:
    from glue import app

    app.load_plugins(settings)
    try:
        return routing.load(
            settings.routes, contract.registry, source=common.config_path(args) or "<defaults>"
        )
    except settings_mod.ConfigError as exc:
        raise common.CliError(str(exc), code=2) from None


def _local(args: argparse.Namespace, fn: Any) -> Any:
    """Run ``fn(store, router)`` on the configured journal; an operation's error is a CLI error."""
    settings = common.load_settings(args)
    router = _router(settings, args)

    async def run(store: journal.Journal) -> Any:
        try:
            return await fn(store, router)
        except operations.OperationError as exc:
            raise common.CliError(str(exc), code=2 if exc.status == 404 else 1) from None

    async def opened() -> Any:
        async with common.opened_journal(settings) as store:
            return await run(store)

    return asyncio.run(opened())


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return rails.parse_duration(value)
    except ValueError as exc:
        raise common.CliError(f"--for: {exc}", code=2) from None


def cmd_routes_list(args: argparse.Namespace) -> int:
    if args.server:
        rows = common.remote(args, "GET", "/v1/routes")
    else:
        rows = _local(args, lambda store, router: operations.routes_list(store, router, time.time()))
    common.emit(rows, _ROUTE_COLUMNS)
    return 0


def _pause(args: argparse.Namespace, route: str) -> int:
    seconds = _seconds(args.for_)
    if args.server:
        path = "/v1/pause" if route == rails.GLOBAL else f"/v1/routes/{route}/pause"
        result = common.remote(args, "POST", path, {"reason": args.reason, "for": seconds})
    else:
        result = _local(
            args,
            lambda store, router: operations.pause(
                store, router, route, _actor(), reason=args.reason, seconds=seconds
            ),
        )
    what = "every route" if route == rails.GLOBAL else f"route {route}"
    until = f" until {common.iso(result['until'])}" if result.get("until") else ""
    print(f"paused {what}{until}: invocations are journaled and held")
    return 0


def _resume(args: argparse.Namespace, route: str) -> int:
    if args.server:
        path = "/v1/resume" if route == rails.GLOBAL else f"/v1/routes/{route}/resume"
        result = common.remote(args, "POST", path, {})
    else:
        result = _local(args, lambda store, router: operations.resume(store, router, route, _actor()))
    what = "every route" if route == rails.GLOBAL else f"route {route}"
    print(f"resumed {what}: {result['released']} held invocations released")
    return 0


def cmd_routes_pause(args: argparse.Namespace) -> int:
    return _pause(args, args.name)


def cmd_routes_resume(args: argparse.Namespace) -> int:
    return _resume(args, args.name)


def _need_all(args: argparse.Namespace, verb: str) -> None:
    if not args.all:
        raise common.CliError(
            f"glue {verb} --all acts on every route (one route: glue routes {verb} NAME)", 2
        )


def cmd_pause(args: argparse.Namespace) -> int:
    _need_all(args, "pause")
    return _pause(args, rails.GLOBAL)


def cmd_resume(args: argparse.Namespace) -> int:
    _need_all(args, "resume")
    return _resume(args, rails.GLOBAL)


def _decide(args: argparse.Namespace, yes: bool) -> int:
    verb = "approve" if yes else "deny"
    if args.server:
        result = common.remote(args, "POST", f"/v1/invocations/{args.id}/{verb}", {"note": args.note})
    else:
        result = _local(
            args,
            lambda store, router: operations.approve(store, args.id, _actor(), yes=yes, note=args.note),
        )
    done = "approved: it runs now" if yes else "denied: it is in the dead-letter queue"
    print(f"invocation {result['invocation']} ({result['route']}) {done}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _decide(args, False)


def cmd_audit(args: argparse.Namespace) -> int:
    since = common.parse_since(args.since)
    if args.server:
        query = "&".join(
            f"{name}={value}"
            for name, value in (("since", since), ("route", args.route))
            if value is not None
        )
        rows = common.remote(args, "GET", "/v1/audit" + (f"?{query}" if query else ""))
    else:
        settings = common.load_settings(args)

        async def run(store: journal.Journal) -> Any:
            return await operations.audit_entries(store, since=since, route=args.route, limit=args.limit)

        rows = asyncio.run(common.with_journal(settings, run))
    common.emit(rows, _AUDIT_COLUMNS)
    return 0


def add_commands(sub: Any) -> None:
    config = common.config_arg

    p = sub.add_parser("routes", help="routes and their safety rails: list, pause, resume")
    routes_sub = p.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    q = routes_sub.add_parser("list", help="each route: state, invocations by state, budget, breaker, window")
    config(q)
    q.set_defaults(func=cmd_routes_list)
    q = routes_sub.add_parser("pause", help="hold the route's invocations (journaled, not run) until resumed")
    config(q)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--reason", help="why (kept in the audit trail)")
    q.add_argument("--for", dest="for_", metavar="DURATION", help="lift the pause by itself after, e.g. 30m")
    q.set_defaults(func=cmd_routes_pause)
    q = routes_sub.add_parser("resume", help="run the route again; what it held runs at once")
    config(q)
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_routes_resume)

    q = sub.add_parser("pause", help="kill switch: hold every route's invocations (--all)")
    config(q)
    q.add_argument("--all", action="store_true", required=False, help="every route")
    q.add_argument("--reason", help="why (kept in the audit trail)")
    q.add_argument("--for", dest="for_", metavar="DURATION", help="lift the pause by itself after, e.g. 1h")
    q.set_defaults(func=cmd_pause)
    q = sub.add_parser("resume", help="lift the kill switch (--all)")
    config(q)
    q.add_argument("--all", action="store_true", help="every route")
    q.set_defaults(func=cmd_resume)

    for name, func, what in (
        ("approve", cmd_approve, "run an invocation awaiting approval"),
        ("deny", cmd_deny, "dead-letter an invocation awaiting approval"),
    ):
        q = sub.add_parser(name, help=what)
        config(q)
        q.add_argument("id", type=int, metavar="ID")
        q.add_argument("--note", help="kept with the decision in the audit trail")
        q.set_defaults(func=func)

    q = sub.add_parser("audit", help="operator actions: who, when, what, why")
    config(q)
    q.add_argument("--since", metavar="T", help="unix seconds, ISO-8601 or a duration back (2h)")
    q.add_argument("--route", "-r")
    q.add_argument("--limit", type=int, default=1000)
    q.set_defaults(func=cmd_audit)
