"""Export a journal to JSON lines and import it into another, across backends (SQLite <-> PostgreSQL).

The file is one JSON object per line: a header ``{"kind": "glue-journal", "version": 1, ...}``, then
``{"kind": "delivery"|"event"|"invocation"|"attempt"|"audit"|"rail", "row": {...}}`` in that order
(each in key order, so every row's references come before it). Columns are those both backends share;
binary columns are base64, JSON columns (``headers``, ``params``, ``plan``, ``detail``) are objects,
flags are booleans. Ids, sequence numbers and states are kept, so dead letters, retries, dedup, every
attempt's history, the audit trail and pauses carry over. Claims are not carried: an invocation that
was running is exported as pending, due when it was claimed, like a released one. Nor are budget
starts, breaker failures and rate-limit buckets: they are counters over the last minutes or hours,
and start again empty. Exports written before attempts, audit and rails were carried import as before.

Import goes into an empty journal only (ids would collide otherwise) and is one transaction. Export
reads page by page, not from one snapshot: stop the replicas first (a move between backends is done
with the daemon stopped anyway), or rows written meanwhile may be missing from the file.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import asyncpg
import orjson

from glue import journal
from glue.journal import postgres, sqlite

__all__ = ["FORMAT_VERSION", "KINDS", "TABLES", "TransferError", "export", "load", "parse"]

FORMAT_VERSION = 1

#: Table -> the columns both backends have, in export order (the first is the id).
TABLES: dict[str, tuple[str, ...]] = {
    "deliveries": (
        "id",
        "received_at",
        "transport",
        "endpoint",
        "format",
        "headers",
        "body",
        "key",
        "rejected",
    ),
    "events": tuple(
        [
            "seq",
            "identity",
            "id",
            "source",
            "type",
            "subject",
            "received_at",
            "status",
            "updated_at",
            "delivery_id",
            "cloudevent",
            "digest",
        ]
    ),
    "invocations": tuple(
        [
            "id",
            "event_seq",
            "route",
            "handler",
            "idempotency_key",
            "ordering_key",
            "params",
            "state",
            "attempt",
            "due_at",
            "created_at",
            "updated_at",
            "last_error",
            "wait_reason",
            "plan",
            "approved_by",
            "taken_by",
            "rate_key",
            "coalesce_key",
            "window_until",
            "opened_at",
        ]
    ),
    "attempts": ("id", "invocation_id", "attempt", "started_at", "duration", "outcome", "error"),
    "audit": ("id", "at", "who", "action", "route", "target", "reason", "detail", "archived"),
    "rails": (
        *("route", "paused", "reason", "until", "by", "at"),
        *("breaker_open_until", "breaker_probe", "breaker_probe_until"),
    ),
}
KINDS = {
    "deliveries": "delivery",
    "events": "event",
    "invocations": "invocation",
    "attempts": "attempt",
    "audit": "audit",
    "rails": "rail",
}
_TABLE_OF = {kind: table for table, kind in KINDS.items()}
_BINARY = {"body", "key", "cloudevent"}
#: Columns an export may lack (written before they existed): imported as null.
_OPTIONAL = {
    *("digest", "wait_reason", "plan", "approved_by"),
    *("taken_by", "rate_key", "coalesce_key", "window_until", "opened_at"),
}
_JSON = {"headers", "params", "plan", "detail"}
_FLAGS = {"paused", "archived"}  # SQLite's 0/1, PostgreSQL's boolean
#: Tables keyed by text rather than a number.
_TEXT_KEYED = {"rails"}
#: SQLite's attempts have no id column of their own: their rowid is it.
_SQLITE_COLUMN = {("attempts", "id"): "rowid"}
_PAGE = 1000


class TransferError(Exception):
    """The file or the target journal is not fit for an import; the message says why."""


# -- the two backends, as plain rows -------------------------------------------------------------


def _sqlite_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON:
        return orjson.loads(value)
    if column in _BINARY:
        return bytes(value)
    if column in _FLAGS:
        return bool(value)
    return value


def _sqlite_columns(table: str) -> str:
    return ", ".join(_SQLITE_COLUMN.get((table, column), column) for column in TABLES[table])


async def _rows(store: journal.Journal, table: str) -> AsyncIterator[dict[str, Any]]:
    """Every row of ``table`` as ``{column: python value}`` (JSON columns decoded), in id order."""
    columns = TABLES[table]
    key = columns[0]
    lite_key = _SQLITE_COLUMN.get((table, key), key)
    after: int | str = "" if table in _TEXT_KEYED else -(1 << 62)
    while True:
        if isinstance(store, sqlite.SQLiteJournal):

            def run(db: sqlite3.Connection, after: int | str = after) -> list[dict[str, Any]]:
                cursor = db.execute(
                    f"SELECT {_sqlite_columns(table)} FROM {table} WHERE {lite_key} > ?"
                    f" ORDER BY {lite_key} LIMIT ?",
                    (after, _PAGE),
                )
                return [{c: _sqlite_value(c, v) for c, v in zip(columns, row, strict=True)} for row in cursor]

            page = await store.read(run)
        elif isinstance(store, postgres.PostgresJournal):

            async def fetch(conn: asyncpg.Connection, after: int | str = after) -> list[dict[str, Any]]:
                records = await conn.fetch(
                    f"SELECT {', '.join(columns)} FROM {table} WHERE {key} > $1 ORDER BY {key} LIMIT $2",
                    after,
                    _PAGE,
                )
                return [
                    {c: orjson.loads(r[c]) if c in _JSON and r[c] is not None else r[c] for c in columns}
                    for r in records
                ]

            page = await store.run(fetch)
        else:
            raise TransferError(f"cannot export from {type(store).__name__}")
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        after = page[-1][key]


def _released(row: dict[str, Any]) -> dict[str, Any]:
    if row.get("state") == "running":
        return {**row, "state": "pending", "attempt": max(int(row["attempt"]) - 1, 0)}
    return row


async def export(store: journal.Journal) -> AsyncIterator[bytes]:
    """The journal as JSON lines (each ends with a newline)."""
    backend = "postgres" if isinstance(store, postgres.PostgresJournal) else "sqlite"
    yield orjson.dumps({"kind": "glue-journal", "version": FORMAT_VERSION, "from": backend}) + b"\n"
    for table in TABLES:
        async for row in _rows(store, table):
            if table == "invocations":
                row = _released(row)
            encoded = {
                column: base64.b64encode(value).decode() if column in _BINARY and value is not None else value
                for column, value in row.items()
            }
            yield orjson.dumps({"kind": KINDS[table], "row": encoded}) + b"\n"


# -- import ----------------------------------------------------------------------------------------


def parse(lines: Iterable[bytes | str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` pairs from an export, validated; raises TransferError naming the line."""
    number = 0
    order = list(TABLES)
    seen = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TransferError(f"line {number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise TransferError(f"line {number}: expected an object")
        if number == 1:
            if record.get("kind") != "glue-journal":
                raise TransferError("line 1: not a glue journal export (no glue-journal header)")
            if record.get("version") != FORMAT_VERSION:
                raise TransferError(f"line 1: export format {record.get('version')!r} is not supported")
            continue
        table = _TABLE_OF.get(str(record.get("kind")))
        row = record.get("row")
        if table is None or not isinstance(row, dict):
            raise TransferError(f"line {number}: expected a {', '.join(KINDS.values())} record")
        if order.index(table) < seen:
            raise TransferError(f"line {number}: {KINDS[table]} after the {order[seen]} records")
        seen = order.index(table)
        missing = [c for c in TABLES[table] if c not in row and c not in _OPTIONAL]
        if missing:
            raise TransferError(f"line {number}: {KINDS[table]} lacks {', '.join(missing)}")
        try:
            values = {
                c: base64.b64decode(row[c], validate=True)
                if c in _BINARY and row[c] is not None
                else row.get(c)
                for c in TABLES[table]
            }
        except (ValueError, TypeError) as exc:
            raise TransferError(f"line {number}: bad base64: {exc}") from None
        yield table, values
    if number == 0:
        raise TransferError("the export is empty")


def _sqlite_param(column: str, value: Any) -> Any:
    if column in _JSON and value is not None:
        return orjson.dumps(value)
    if column in _FLAGS:
        return int(bool(value))
    return value


def _pg_param(column: str, value: Any) -> Any:
    if column in _JSON and value is not None:
        return orjson.dumps(value).decode()
    if column in _FLAGS:
        return bool(value)
    return value


async def _empty(store: journal.Journal) -> bool:
    return not await store.list(limit=1) and not await store.rejected(limit=1)


async def load(store: journal.Journal, rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Insert an export into an empty journal in one transaction; returns row counts per table."""
    if not await _empty(store):
        raise TransferError("the target journal is not empty; import into a new one")
    by_table: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
    for table, row in rows:
        by_table[table].append(tuple(row[c] for c in TABLES[table]))
    counts = {table: len(values) for table, values in by_table.items()}
    _check_references(by_table)
    try:
        if isinstance(store, sqlite.SQLiteJournal):
            await store.write(lambda db: _load_sqlite(db, by_table))
        elif isinstance(store, postgres.PostgresJournal):
            await store.run(lambda conn: _load_postgres(conn, by_table))
        else:
            raise TransferError(f"cannot import into {type(store).__name__}")
    except (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise TransferError(f"the export is inconsistent: {exc}") from None
    return counts


def _check_references(by_table: dict[str, list[tuple[Any, ...]]]) -> None:
    """Every event names a delivery of the export, every invocation an event of it (the target is
    empty, so an export must hold what its rows refer to)."""
    for table, column, parent in (
        ("events", "delivery_id", "deliveries"),
        ("invocations", "event_seq", "events"),
        ("attempts", "invocation_id", "invocations"),
    ):
        held = {row[0] for row in by_table[parent]}  # the parent's key is its first column
        at = TABLES[table].index(column)
        for row in by_table[table]:
            if row[at] not in held:
                raise TransferError(
                    f"the export is inconsistent: {KINDS[table]} {row[0]} refers to {KINDS[parent]} "
                    f"{row[at]}, which the export does not hold"
                )


def _load_sqlite(db: sqlite3.Connection, by_table: dict[str, list[tuple[Any, ...]]]) -> None:
    with sqlite.transaction(db):
        for table, values in by_table.items():
            columns = TABLES[table]
            db.executemany(
                f"INSERT INTO {table} ({_sqlite_columns(table)}) VALUES ({', '.join('?' * len(columns))})",
                [tuple(_sqlite_param(c, v) for c, v in zip(columns, row, strict=True)) for row in values],
            )


async def _load_postgres(conn: asyncpg.Connection, by_table: dict[str, list[tuple[Any, ...]]]) -> None:
    async with conn.transaction():
        for table, values in by_table.items():
            columns = TABLES[table]
            await conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) OVERRIDING SYSTEM VALUE"
                f" VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})",
                [tuple(_pg_param(c, v) for c, v in zip(columns, row, strict=True)) for row in values],
            )
            if table in _TEXT_KEYED:
                continue
            # The identity sequences continue after the imported ids.
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{columns[0]}'),"
                f" coalesce((SELECT max({columns[0]}) FROM {table}), 0) + 1, false)"
            )
