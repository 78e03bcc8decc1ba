"""Fixtures of the handler tests that run a handler through the executor: the journal per backend and the
executor harness of tests/execution/conftest.py."""

from tests.execution.conftest import append, backend, harness, pg_database, reopen, store  # noqa: F401 (fixtures)
