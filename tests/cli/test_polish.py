"""The command line tells the truth plainly: ``--version``, a help text without markup, ``--status``
checked against the statuses an event can have, and every time in JSON output as ISO-8601."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import glue
from glue import cli
from tests.cli.test_explain_replay_dlq import json_lines, make_dead_letters, write_config


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"glue {glue.__version__}"


def test_help_has_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "runtime-glue" in out
    for command in ("run", "check", "config", "events", "dlq", "handlers"):
        assert f"    {command} " in out


def test_events_list_refuses_an_unknown_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["events", "list", "--status", "failed"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'failed' (choose from 'pending', 'routed', 'unmatched')" in err


def times(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every value under a key ending in ``At``, at any depth."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in times(v, k)]
    if isinstance(value, list):
        return [found for v in value for found in times(v, key)]
    return [(key, value)] if key.endswith("At") else []


def is_iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    return datetime.datetime.fromisoformat(value).tzinfo is not None


@pytest.mark.parametrize(
    "command",
    [["dlq", "list"], ["dlq", "show", "ID"], ["events", "list"], ["events", "show", "d0"]],
    ids=["dlq-list", "dlq-show", "events-list", "events-show"],
)
def test_every_time_is_iso_8601(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    [dead] = make_dead_letters(Path(config), 1)
    argv = [str(dead) if part == "ID" else part for part in command]
    assert cli.main([*argv, "-c", config]) == 0
    out = capsys.readouterr().out
    documents = json_lines(out) if command[1] == "list" else [orjson.loads(out)]
    found = times(documents)
    assert found, "the output has times"
    assert [(key, value) for key, value in found if not is_iso(value)] == []
