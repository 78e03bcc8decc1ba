"""The README's Quick start, run as a new user runs it, on a fresh copy of config/glue.yaml.

The daemon is started as ``make run`` starts it (its placeholder secrets are read from the Makefile);
the commands of the README's "Send it an event" block then run verbatim in a shell, in a directory
where ``.venv/bin/glue`` is this checkout's command line, without the webhook secrets in their
environment. Only the port is changed (``localhost:8080`` to a free port), as other tests may hold 8080.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quick_start_commands() -> str:
    """The shell block of the README's Quick start that follows "Send it an event"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    after = section.split("Send it an event", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the Quick start has no shell block after 'Send it an event'"
    return match.group(1)


def make_run_secrets() -> dict[str, str]:
    """The placeholder secrets ``make run`` exports (``run: export NAME ?= value``)."""
    makefile = (ROOT / "Makefile").read_text()
    found = dict(re.findall(r"^run: export (\w+) \?= (\S+)$", makefile, re.MULTILINE))
    assert found, "the Makefile's run target exports no secrets"
    return found


def without_glue_secrets(secrets: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in secrets and not k.startswith("GLUE_")}


@pytest.fixture
def fresh_checkout(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone after ``make run``: config/glue.yaml, .venv/bin/glue."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "glue.yaml", tmp_path / "config" / "glue.yaml")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    glue = bin_dir / "glue"
    glue.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m glue.cli "$@"\n')
    glue.chmod(0o755)
    return tmp_path


@pytest.fixture
def daemon(fresh_checkout: Path) -> Iterator[int]:
    """``glue run --config config/glue.yaml`` with make run's secrets, on a free port."""
    port = free_port()
    secrets = make_run_secrets()
    log = fresh_checkout / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "glue.cli", "run", "--config", "config/glue.yaml"],
            cwd=fresh_checkout,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **without_glue_secrets(secrets),
                **secrets,
                "PYTHONPATH": str(ROOT),
                "GLUE_SERVER__PORT": str(port),
            },
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"glue run exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, f"glue run not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_quick_start_commands_work_as_written(fresh_checkout: Path, daemon: int) -> None:
    commands = quick_start_commands().replace("localhost:8080", f"localhost:{daemon}")
    secrets = make_run_secrets()
    result = subprocess.run(
        ["bash", "-e", "-c", commands],
        cwd=fresh_checkout,
        env=without_glue_secrets(secrets),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "HTTP/1.1 202" in result.stdout
    # curl prints the answer's body without a newline: the listing starts on its last line.
    decoder = json.JSONDecoder()
    listed = [decoder.raw_decode(result.stdout, m.start())[0] for m in re.finditer(r'\{"seq"', result.stdout)]
    assert [(row["type"], row["source"]) for row in listed] == [("com.example.hello", "/me")]


def test_the_example_config_only_plans(fresh_checkout: Path, daemon: int) -> None:
    """``make run`` acts on nothing: the start-up lines say every route is dry-run."""
    started = [json.loads(line) for line in (fresh_checkout / "daemon.log").read_text().splitlines()]
    modes = {line["route"]: line["mode"] for line in started if line["event"] == "route"}
    assert modes == {"audit": "dry-run", "reload-model-on-push": "dry-run", "release-workflow": "dry-run"}


@pytest.mark.parametrize(
    "command",
    [
        ["events", "list"],
        ["dlq", "list"],
        ["explain", "events.json"],
        ["replay", "--dry-run", "events.json"],
    ],
    ids=["events-list", "dlq-list", "explain", "replay-dry-run"],
)
def test_read_only_commands_need_no_webhook_secret(
    fresh_checkout: Path,
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from glue import cli

    for name in make_run_secrets():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(fresh_checkout)
    (fresh_checkout / "events.json").write_text(
        '{"specversion": "1.0", "id": "1", "source": "/me", "type": "com.example.hello"}\n'
    )
    assert cli.main([*command, "--config", "config/glue.yaml"]) == 0, capsys.readouterr().err
    assert cli.main(["check", "--config", "config/glue.yaml"]) == 2
    assert "GLUE_HARBOR_AUTH is not set" in capsys.readouterr().err


def test_the_example_release_workflow_gets_the_bare_tag(
    fresh_checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from glue import cli

    monkeypatch.chdir(fresh_checkout)
    push = {
        "object_kind": "tag_push",
        "ref": "refs/tags/v1.2.0",
        "project": {"path_with_namespace": "g/p", "web_url": "https://gitlab.example/g/p"},
    }
    (fresh_checkout / "push.json").write_text(json.dumps(push))
    argv = ["explain", "--config", "config/glue.yaml", "--format", "gitlab"]
    argv += ["-H", "X-Gitlab-Event: Tag Push Hook", "-H", "X-Gitlab-Event-UUID: 1", "push.json"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    release = next(row for row in rows if row["route"] == "release-workflow")
    assert release["matched"] and release["params"]["parameters"] == {"repo": "g/p", "tag": "v1.2.0"}
