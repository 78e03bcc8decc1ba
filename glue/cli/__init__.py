"""Command line of runtime-glue: run the daemon, check a config, read the journal, explain and replay.

Every command that reads a config accepts ``--config F`` (default: $GLUE_CONFIG, else the built-in
defaults). Exit codes: 0 success, 1 the command's subject is wrong (a payload does not decode, an
event is not found), 2 the invocation or the configuration is wrong. Errors name the file, the field and
the reason; no command prints a stack trace for bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import glue
from glue.cli import catalog, common, daemon, dlq, rails, replay, store

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glue",
        description="runtime-glue: takes webhooks and Kafka records as CloudEvents, journals them, routes "
        "them by CEL rules and runs idempotent handlers.",
        epilog="Start with: glue check --config F, then glue run --config F (see glue COMMAND --help).",
    )
    parser.add_argument("--version", action="version", version=f"glue {glue.__version__}")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="act on a remote daemon through its admin API (routes, pause, resume, approve, deny, audit)",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="the admin API's bearer token (default $GLUE_ADMIN_TOKEN)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (daemon, store, replay, dlq, rails, catalog):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except common.CliError as exc:
        print(f"glue: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
