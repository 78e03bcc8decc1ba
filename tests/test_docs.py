"""The user documentation covers what a user writes and reads, and sends nobody into the tests."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from glue import journal, routing

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
USER_DOCS = [ROOT / "README.md", ROOT / "charts" / "runtime-glue" / "README.md"]


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_docs_point_at_no_test_module(path: Path) -> None:
    assert re.findall(r"tests/[\w/]+\.py", path.read_text()) == []


def test_every_route_key_is_documented() -> None:
    keys = [field.alias or name for name, field in routing.Route.model_fields.items()]
    assert [key for key in keys if f"{key}:" not in README] == []


def test_every_status_and_state_is_documented() -> None:
    routes = section("Routes and execution")
    values = [*journal.EVENT_STATUSES, *typing.get_args(journal.InvocationState)]
    assert [value for value in values if f"`{value}`" not in routes] == []
    assert "glue dlq\nrejected" in routes or "glue dlq rejected" in routes
