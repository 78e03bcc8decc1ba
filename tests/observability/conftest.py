"""Fixtures of the observability tests: a real daemon, as in the HTTP source's tests."""

from tests.sources.http.conftest import start_daemon  # noqa: F401 (fixture)
