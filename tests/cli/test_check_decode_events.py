"""The command line as an operator uses it: check, decode, events list/show."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from glue import cli, events, formats, journal, settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_check_accepts_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARBOR_AUTH", "x")
    config = write(
        tmp_path / "glue.yaml",
        """
endpoints:
  - {name: harbor, path: /hooks/harbor, format: harbor, auth: {type: header, secret: {env: HARBOR_AUTH}}}
""",
    )
    assert cli.main(["check", "--offline", "--config", str(config)]) == 0
    assert "ok (1 endpoints, 0 routes)" in capsys.readouterr().out


def test_check_warns_of_argo_endpoints_and_topics_without_an_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "glue.yaml",
        """
endpoints:
  - {name: sensor, path: /hooks/sensor, format: argo, type: t, source: s}
  - {name: by-header, path: /hooks/h, format: argo, type: t, source: s, idHeader: X-Event-Id}
  - {name: by-field, path: /hooks/f, format: argo, type: t, source: s, idField: event.id}
  - {name: harbor, path: /hooks/harbor, format: harbor}
sources:
  kafka:
    bootstrapServers: [127.0.0.1:9092]
    groupId: glue
    topics: [{name: triggers, format: argo, type: t, source: s, dedupWindow: 60}]
  jetstream:
    url: nats://127.0.0.1:4222
    stream: platform
    subjects:
      - {subject: "hooks.*", format: argo, type: t, source: s}
      - {subject: "ids.*", format: argo, type: t, source: s, idField: id}
""",
    )
    assert cli.main(["check", "--offline", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "ok (4 endpoints, 0 routes)" in out
    warnings = err.splitlines()
    assert warnings == [
        f"{config}: warning: endpoints[0] (sensor): format argo without idHeader or idField: a plain JSON "
        "body is identified by its digest, and equal bodies within dedupWindow (900 s) are taken as one "
        "event; have the trigger send the event's context.id (README: Argo Events)",
        f"{config}: warning: sources.kafka.topics[0] (triggers): format argo without idHeader or idField: "
        "a plain JSON body is identified by its digest, and equal bodies within dedupWindow (60 s) are "
        "taken as one event; have the trigger send the event's context.id (README: Argo Events)",
        f"{config}: warning: sources.jetstream.subjects[0] (hooks.*): format argo without idHeader or "
        "idField: a plain JSON body is identified by its digest, and equal bodies within dedupWindow "
        "(900 s) are taken as one event; have the trigger send the event's context.id (README: Argo Events)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server: {port: 99999}\n", "glue.yaml: server.port: Input should be less than or equal to 65535"),
        (
            "endpoints:\n  - {name: a, path: /a, format: jenkins}\n",
            "glue.yaml: endpoints[0].format: Input should be",
        ),
        (
            "endpoints:\n  - {name: a, path: /a, format: gitlab, auth: {type: gitlab-token}}\n",
            "glue.yaml: endpoints[0].auth: Value error, auth type 'gitlab-token' needs a secret",
        ),
        ("endpoints:\n  - {name: a, path: /a, format: gitlab,\n", "glue.yaml: line 3: not valid YAML"),
        ("journal: {backend: postgres}\n", "glue.yaml: journal: Value error, backend postgres needs dsn"),
        ("serverr: {}\n", "glue.yaml: serverr: Extra inputs are not permitted"),
        (
            "endpoints:\n  - {name: a, path: /a, format: minio,\n"
            "     auth: {type: bearer, secret: {file: /nonexistent}}}\n",
            "glue.yaml: endpoints[0].auth.secret: cannot read secret file /nonexistent",
        ),
    ],
    ids=["range", "unknown-format", "missing-secret", "yaml", "dsn", "unknown-key", "secret-file"],
)
def test_check_names_file_field_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    config = write(tmp_path / "glue.yaml", text)
    assert cli.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "glue.yaml", "server: {port: 8080}\n")
    monkeypatch.setenv("GLUE_SERVER__PORT", "9191")
    assert settings.load(config).server.port == 9191


def test_decode_prints_cloudevents_through_the_live_decoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = write(
        tmp_path / "push.json",
        json.dumps(
            {
                "object_kind": "tag_push",
                "ref": "refs/tags/v1.0.0",
                "project": {"web_url": "https://gitlab.example/g/p"},
            }
        ),
    )
    code = cli.main(
        [
            "decode",
            "--format",
            "gitlab",
            "-H",
            "Idempotency-Key: 5f0a",
            "-H",
            "X-Gitlab-Event: Tag Push Hook",
            str(body),
        ]
    )
    assert code == 0
    [line] = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert (event["type"], event["id"], event["source"]) == (
        "gitlab.tag_push",
        "5f0a",
        "https://gitlab.example/g/p",
    )


def test_decode_error_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = write(tmp_path / "bad.json", '{"object_kind": ')
    assert cli.main(["decode", "--format", "gitlab", str(body)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"glue: {body}: body is not valid JSON") and "HTTP 400" in err


async def test_events_list_and_show_read_the_journal(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    config = write(tmp_path / "glue.yaml", f"journal: {{path: {db}}}\n")
    store = journal.create(settings.Journal(path=db))
    await store.open()
    delivery = events.Delivery(
        "http",
        "ce",
        "cloudevents",
        {
            "ce-id": "e1",
            "ce-source": "/s",
            "ce-type": "t.one",
            "ce-specversion": "1.0",
            "content-type": "application/json",
        },
        b'{"k": 1}',
    )
    await store.append(delivery, formats.decode(delivery))
    await store.close()

    async def glue(*argv: str) -> tuple[int, str, str]:  # as from a shell: its own process and event loop
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "glue.cli",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, _ = await glue("events", "list", "--config", str(config))
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["id"], row["type"], row["status"]) == ("e1", "t.one", "pending")
    code, out, _ = await glue("events", "show", "--config", str(config), "e1")
    shown = json.loads(out)
    assert shown["cloudevent"]["data"] == {"k": 1}
    assert shown["delivery"]["body"] == '{"k": 1}'
    code, _, err = await glue("events", "show", "--config", str(config), "nope")
    assert code == 1 and err == "glue: no event 'nope' in the journal\n"


def test_environment_overrides_a_multi_word_key_the_file_also_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "glue.yaml",
        "server: {maxBacklog: 10}\njournal: {groupCommitMs: 1}\n"
        "endpoints: [{name: g, path: /g, format: gitlab,\n"
        "             auth: {type: gitlab-token, secret: {env: GLUE_GITLAB_TOKEN}}}]\n",
    )
    monkeypatch.setenv("GLUE_SERVER__MAX_BACKLOG", "55")
    monkeypatch.setenv("GLUE_JOURNAL__GROUPCOMMITMS", "3")
    monkeypatch.setenv("GLUE_GITLAB_TOKEN", "not-a-setting")  # the config's secret, not an override
    loaded = settings.load(config)
    assert (loaded.server.max_backlog, loaded.journal.group_commit_ms) == (55, 3.0)


def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "glue.yaml", "server: {port: 8080}\n")
    monkeypatch.setenv("GLUE_SERVER__PORT", "eighty")
    assert cli.main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "glue.yaml: server.port (from GLUE_SERVER__PORT): Input should be a valid integer" in err
    assert "Traceback" not in err
