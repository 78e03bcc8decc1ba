"""Configuration that says what it does: an unknown ``GLUE_*`` variable is an error naming it and its
close match; ``glue check`` needs a config and refuses an empty one; ``glue config`` prints the
effective configuration with secrets as references only; a raised lease is logged at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from glue import app, cli
from tests import support


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_an_unknown_glue_variable_is_an_error_with_a_close_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "glue.yaml", f"journal: {{path: {tmp_path / 'j.db'}}}\n")
    monkeypatch.setenv("GLUE_SERVR__PORT", "1")
    assert cli.main(["events", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "environment GLUE_SERVR__PORT: names no setting (did you mean GLUE_SERVER__PORT?)" in err
    assert "Traceback" not in err


def test_an_unknown_nested_key_is_an_error_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "glue.yaml", "server: {port: 8080}\n")
    monkeypatch.setenv("GLUE_EXECUTION__DRYRUN", "true")  # accepted spelling: no error
    monkeypatch.setenv("GLUE_EXECUTION__LEASE", "30")
    assert cli.main(["check", "--config", str(config)]) == 2
    assert "did you mean GLUE_EXECUTION__LEASE_SECONDS?" in capsys.readouterr().err


def test_variables_the_config_names_as_secrets_are_not_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "glue.yaml",
        "endpoints:\n"
        "  - {name: g, path: /g, format: gitlab,"
        " auth: {type: gitlab-token, secret: {env: GLUE_GITLAB_TOKEN, previousEnv: GLUE_GITLAB_OLD}}}\n",
    )
    monkeypatch.setenv("GLUE_GITLAB_TOKEN", "t")
    monkeypatch.setenv("GLUE_GITLAB_OLD", "o")
    monkeypatch.setenv("GLUE_CONFIG", str(config))
    assert cli.main(["check"]) == 0, capsys.readouterr().err


def test_check_needs_a_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GLUE_CONFIG", raising=False)
    assert cli.main(["check"]) == 2
    assert "no config to check: give --config FILE or set GLUE_CONFIG" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comments"])
def test_check_refuses_an_empty_file(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path / "glue.yaml", text)
    assert cli.main(["check", "--config", str(config)]) == 2
    assert f"{config}: the file is empty" in capsys.readouterr().err


def test_config_prints_file_plus_environment_with_secret_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "glue.yaml",
        "server: {port: 8080}\n"
        "endpoints:\n"
        "  - {name: h, path: /h, format: harbor, auth: {type: header, secret: {env: HARBOR_AUTH}}}\n"
        "  - {name: m, path: /m, format: minio, auth: {type: bearer, secret: {value: inline-secret}}}\n",
    )
    monkeypatch.setenv("HARBOR_AUTH", "the-harbor-secret")
    monkeypatch.setenv("GLUE_SERVER__PORT", "9191")
    assert cli.main(["config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "# server.port from GLUE_SERVER__PORT" in out
    effective = yaml.safe_load(out)
    assert effective["server"]["port"] == 9191
    assert effective["execution"]["leaseSeconds"] == 60.0  # defaults are shown too
    assert effective["endpoints"][0]["auth"]["secret"] == {"env": "HARBOR_AUTH"}
    assert "the-harbor-secret" not in out and "inline-secret" not in out


async def test_a_raised_lease_is_logged_at_start(tmp_path: Path) -> None:
    config = support.daemon_settings(
        tmp_path,
        execution={"leaseSeconds": 30},
        routes=[{"name": "slow", "handler": "log", "delivery": {"timeout": 120}}],
    )
    app.load_plugins(config)
    with capture_logs() as logs:
        async with support.running(config):
            pass
    [line] = [e for e in logs if e["event"] == "lease raised above execution.leaseSeconds"]
    assert (line["configured"], line["lease"]) == (30, 130)
    assert "route slow has a timeout of 120 s" in line["reason"]
