"""Fixtures of the command-line tests: the throwaway PostgreSQL database of tests/journal/pgserver.py."""

from tests.journal.pgserver import pg_database, pg_dsn  # noqa: F401 (fixtures)
