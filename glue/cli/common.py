"""What the commands share: errors, settings, the journal, output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import getpass
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from glue import journal
from glue import settings as settings_mod

__all__ = [
    "CliError",
    "config_arg",
    "config_path",
    "emit",
    "iso",
    "iso_times",
    "load_settings",
    "opened_journal",
    "operator",
    "parse_headers",
    "parse_since",
    "read_input",
    "remote",
    "show",
    "with_journal",
]


class CliError(Exception):
    """A problem to print as one line (or a few) and exit with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def config_path(args: argparse.Namespace) -> str | None:
    """The config file a command reads: ``--config``, else $GLUE_CONFIG, else None (the defaults)."""
    return getattr(args, "config", None) or os.environ.get("GLUE_CONFIG")


def load_settings(args: argparse.Namespace, *, secrets: bool = False) -> settings_mod.Settings:
    """The command's settings. Only ``glue run`` and ``glue check`` (``secrets``) need the endpoints'
    and sources' secrets; other commands read a secret where they use it (the journal's DSN when
    they open it), so a read-only command runs without the webhook tokens."""
    path = config_path(args)
    try:
        return settings_mod.load(path, secrets=secrets)
    except settings_mod.ConfigError as exc:
        raise CliError(str(exc), code=2) from None


def operator() -> str:
    """Who acts, for the audit trail: the OS user (a uid without a name in some containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


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
    rows = [iso_times(row) for row in rows]
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
    document = iso_times(document)
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {item!r}: expected 'Name: value'", code=2)
        headers[name.strip().lower()] = value.strip()
    return headers


def config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config (default $GLUE_CONFIG)")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """``--since``: unix seconds, an ISO-8601 time, or a duration back from now (``15m``, ``2h``, ``7d``)."""
    if value is None:
        return None
    now = time.time() if now is None else now
    match = _DURATION.match(value.strip())
    if match:
        return now - float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--since {value!r}: expected unix seconds, ISO-8601 or a duration like 2h", code=2
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


#: Keys whose values are times: printed as ISO-8601 by every command (never unix seconds).
TIME_KEYS = frozenset(
    {
        *("receivedAt", "dueAt", "createdAt", "updatedAt", "deadAt", "leaseUntil", "at", "startedAt"),
        *("until", "breakerOpenUntil"),
    }
)


def iso_times(value: Any) -> Any:
    """``value`` with every time (a number under one of :data:`TIME_KEYS`, at any depth) as ISO-8601."""
    if isinstance(value, dict):
        return {
            key: iso(item)
            if key in TIME_KEYS and isinstance(item, int | float) and not isinstance(item, bool)
            else iso_times(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [iso_times(item) for item in value]
    return value


def iso(timestamp: float) -> str:
    """Unix seconds as ISO-8601 UTC, to the second."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def remote(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the admin API of ``--server`` and return its JSON; its errors become CLI errors."""
    token = os.environ.get("GLUE_ADMIN_TOKEN")
    if args.token_file is not None:
        token = read_input(args.token_file).decode().strip()
    if not token:
        raise CliError("--server needs a token: --token-file FILE or $GLUE_ADMIN_TOKEN", code=2)

    async def call() -> Any:
        headers = {"authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, args.server.rstrip("/") + path, json=body, headers=headers) as response,
        ):
            data = orjson.loads(await response.read() or b"null")
            if response.status >= 400:
                error = data.get("error") if isinstance(data, dict) else None
                raise CliError(f"{args.server}: HTTP {response.status}: {error or response.reason}")
            return data

    try:
        return asyncio.run(call())
    except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
        raise CliError(f"{args.server}: {exc}") from None
