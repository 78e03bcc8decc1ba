"""Commands of the daemon itself: ``glue run``, ``check``, ``rbac``, ``decode``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from glue import contract, events, formats, journal, listener, observability, routing
from glue import settings as settings_mod
from glue.cli import common

__all__ = ["add_commands"]


def cmd_run(args: argparse.Namespace) -> int:
    from glue import app

    settings = common.load_settings(args, secrets=True)
    overrides: dict[str, Any] = {}
    if args.record:
        overrides["record"] = Path(args.record)
    if args.dry_run:
        overrides["execution"] = settings.execution.model_copy(update={"dry_run": True})
    if overrides:
        settings = settings.model_copy(update=overrides)
    extra: tuple[Any, ...] = ()
    if settings.tracing.exporting(os.environ):
        from glue import tracing

        extra = (tracing.log_fields,)  # every line written in a span names its trace and span
    observability.configure_logging(settings.logging, extra=extra)
    loop_factory = None
    if settings.server.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(app.run(settings))
    except settings_mod.ConfigError as exc:  # routes are compiled when the daemon starts
        raise common.CliError(str(exc), code=2) from None
    except journal.JournalUnavailable as exc:
        raise common.CliError(f"journal: {exc}", code=2) from None
    except OSError as exc:  # e.g. the port is taken
        raise common.CliError(f"cannot start: {exc.strerror or exc}", code=2) from None
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if common.config_path(args) is None:
        raise common.CliError("check: no config to check: give --config FILE or set GLUE_CONFIG", code=2)
    settings = common.load_settings(args, secrets=True)
    source = common.config_path(args) or "<defaults>"
    from glue import app

    app.load_plugins(settings)

    try:  # CEL syntax, templates, unknown handlers, parameters their models reject
        router = routing.load(settings.routes, contract.registry, source=source)
    except settings_mod.ConfigError as exc:
        raise common.CliError(str(exc), code=2) from None
    if settings.server.tls is not None:  # the certificate, key and client CA load as a server would
        try:
            listener.ServerTls(settings.server.tls, ask_client_cert=True)
        except settings_mod.ConfigError as exc:
            raise common.CliError(str(exc), code=2) from None
    problems = contract.registry.check_clients(settings.clients)
    if problems:
        raise common.CliError(str(settings_mod.ConfigError(source, problems)), code=2)
    for warning in warnings(settings):
        print(f"{source}: warning: {warning}", file=sys.stderr)
    if not args.offline:
        down = asyncio.run(_check_clients(settings, router))
        if down:
            raise common.CliError(f"{source}: clients down: {', '.join(down)} (--offline skips these checks)")
    print(f"{source}: ok ({len(settings.endpoints)} endpoints, {len(settings.routes)} routes)")
    return 0


async def _check_clients(settings: settings_mod.Settings, router: routing.Router) -> list[str]:
    """The daemon's client checks, once: one line per configured client; the names of those down."""
    from glue import health

    async with contract.Clients(contract.registry, settings.clients).opened() as clients:
        checked = health.create(settings, contract.registry, clients, router.routes, log_changes=False)
        statuses = await checked.check_all()
    for name, status in statuses.items():
        if status.up:
            print(f"client {name} ({status.target}): up")
        else:
            print(f"client {name} ({status.target}): down: {status.reason}", file=sys.stderr)
    return [name for name, status in statuses.items() if not status.up]


def warnings(settings: settings_mod.Settings) -> list[str]:
    """What a valid config does that it probably should not: ``argo`` endpoints and topics that say
    nowhere where the producer's event id is (plain JSON bodies then get a digest identity)."""
    found: list[str] = []
    sources: list[
        tuple[str, settings_mod.Endpoint | settings_mod.KafkaTopic | settings_mod.JetStreamSubject]
    ] = [(f"endpoints[{n}] ({endpoint.name})", endpoint) for n, endpoint in enumerate(settings.endpoints)]
    if settings.sources.kafka is not None:
        sources += [
            (f"sources.kafka.topics[{n}] ({topic.name})", topic)
            for n, topic in enumerate(settings.sources.kafka.topics)
        ]
    if settings.sources.jetstream is not None:
        sources += [
            (f"sources.jetstream.subjects[{n}] ({entry.subject})", entry)
            for n, entry in enumerate(settings.sources.jetstream.subjects)
        ]
    for where, spec in sources:
        if spec.format == "argo" and not spec.id_header and not spec.id_field:
            found.append(
                f"{where}: format argo without idHeader or idField: a plain JSON body is identified by "
                f"its digest, and equal bodies within dedupWindow ({spec.dedup_window:g} s) are taken as "
                "one event; have the trigger send the event's context.id (README: Argo Events)"
            )
    return found


def cmd_config(args: argparse.Namespace) -> int:
    """The effective configuration: the file, the environment's overrides and the defaults, as YAML;
    a secret appears only as its reference (file or variable), never its value."""
    import os

    import yaml

    settings = common.load_settings(args)
    source = common.config_path(args) or "<defaults>"
    overrides = settings_mod.environment_overrides(os.environ, settings_mod.secret_variables(settings))
    lines = [f"# effective configuration of {source}"]
    lines += [f"# {path} from {variable}" for path, (variable, _) in sorted(overrides.items())]
    document = settings.model_dump(mode="json", by_alias=True, exclude_none=True)
    sys.stdout.write("\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False))
    return 0


def cmd_rbac(args: argparse.Namespace) -> int:
    import yaml

    from glue import app, rbac

    settings = common.load_settings(args)
    source = common.config_path(args) or "<defaults>"
    account: tuple[str, str] | None = None
    if args.service_account:
        namespace, _, name = args.service_account.partition("/")
        if not namespace or not name:
            raise common.CliError("--service-account must be NAMESPACE/NAME", code=2)
        account = (namespace, name)
    app.load_plugins(settings)
    try:
        objects = rbac.render(
            settings, contract.registry, name=args.name, service_account=account, source=source
        )
    except settings_mod.ConfigError as exc:
        raise common.CliError(str(exc), code=2) from None
    if not objects:
        print("# the configured routes need no Kubernetes permissions")
        return 0
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


def cmd_policy_openbao(args: argparse.Namespace) -> int:
    from glue import app, rbac

    settings = common.load_settings(args)
    source = common.config_path(args) or "<defaults>"
    app.load_plugins(settings)
    try:
        policy = rbac.openbao_policy(settings, contract.registry, source=source)
    except settings_mod.ConfigError as exc:
        raise common.CliError(str(exc), code=2) from None
    sys.stdout.write(policy or "# the configured routes need no OpenBao policy\n")
    return 0


# -- decode ------------------------------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    body = common.read_input(args.file)
    headers = common.parse_headers(args.header)
    delivery = events.Delivery(
        transport=args.transport, endpoint="cli", format=args.format, headers=headers, body=body
    )
    try:
        batch = formats.decode(delivery, formats.Options.of(args))
    except formats.DecodeError as exc:
        raise common.CliError(f"{args.file}: {exc.reason} (HTTP {exc.status})") from None
    for event in batch:
        sys.stdout.write(events.to_json(event).decode() + "\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon")
    common.config_arg(p)
    p.add_argument("--record", metavar="FILE", help="append every delivery to FILE as a replayable line")
    p.add_argument(
        "--dry-run", "-n", action="store_true", help="every route only plans (as execution.dryRun: true)"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check", help="validate a config, then check each configured client (reachable, login, permissions)"
    )
    common.config_arg(p)
    p.add_argument(
        "--offline", action="store_true", help="validate the config only; reach no client (CI, a laptop)"
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", help="print the effective configuration (file + environment), as YAML")
    common.config_arg(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("rbac", help="print the least Role/ClusterRole the configured routes need, as YAML")
    common.config_arg(p)
    p.add_argument(
        "--name", default="runtime-glue", help="name of the Role/ClusterRole (default: %(default)s)"
    )
    p.add_argument("--service-account", metavar="NAMESPACE/NAME", help="also print bindings to this account")
    p.set_defaults(func=cmd_rbac)

    p = sub.add_parser("policy", help="print the least policy a control plane needs for the routes")
    policy_sub = p.add_subparsers(dest="policy_command", required=True, metavar="TARGET")
    q = policy_sub.add_parser("openbao", help="the OpenBao policy (HCL): paths and capabilities")
    common.config_arg(q)
    q.set_defaults(func=cmd_policy_openbao)

    p = sub.add_parser("decode", help="print the CloudEvents a payload decodes to, as JSON lines")
    p.add_argument("--format", "-f", required=True, choices=sorted(formats.DECODERS))
    p.add_argument("--header", "-H", action="append", default=[], metavar="'Name: value'")
    p.add_argument("--type", help="argo: type for plain JSON bodies")
    p.add_argument("--source", help="argo/harbor: source for bodies without one")
    p.add_argument("--id-header", help="argo: header holding the event id")
    p.add_argument("--id-field", metavar="PATH", help="argo: dotted path to the event id in the body")
    p.add_argument("--transport", default="http", help=argparse.SUPPRESS)
    p.add_argument("file", metavar="FILE", help="payload file, or - for stdin")
    p.set_defaults(func=cmd_decode, dedup_window=None)
