"""The ``sources.argoEvents`` settings group: what an operator writes, what a mistake looks like."""

from __future__ import annotations

from pathlib import Path

import pytest

from glue import settings
from glue.sources import argo_events

YAML = """
sources:
  argoEvents:
    url: nats://eventbus-default-js-svc.argo-events.svc:4222
    auth: {file: AUTH_FILE}
    tls: {caFile: /etc/eventbus/ca/ca-cert}
    eventSources:
      - {name: gitlab-hooks, unwrap: gitlab}
      - {name: models, unwrap: minio}
      - "*"
    durable: runtime-glue
"""


def load(tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "glue.yaml"
    path.write_text(text)
    return settings.load(path)


def auth(tmp_path: Path, text: str = "username: argo\npassword: pa55-w0rd\n") -> Path:
    path = tmp_path / "auth.yaml"
    path.write_text(text)
    return path


def test_the_documented_group_loads(tmp_path: Path) -> None:
    config = load(tmp_path, YAML.replace("AUTH_FILE", str(auth(tmp_path)))).sources.argo_events
    assert config is not None
    assert config.url == ["nats://eventbus-default-js-svc.argo-events.svc:4222"]
    assert [(e.name, e.unwrap) for e in config.event_sources] == [
        ("gitlab-hooks", "gitlab"),
        ("models", "minio"),
        ("*", None),
    ]
    assert (config.deliver, config.stream, config.durable) == ("new", "default", "runtime-glue")
    assert config.tls is not None and config.tls.ca_file == Path("/etc/eventbus/ca/ca-cert")
    options = argo_events.connect_options(config.model_copy(update={"tls": None}))
    assert (options["user"], options["password"]) == ("argo", "pa55-w0rd")


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ("url: http://bus:4222", "sources.argoEvents", "must start with nats:// or tls://"),
        ('eventSources: ["a.b.c"]', "sources.argoEvents.eventSources[0].name", "should match pattern"),
        (
            "eventSources: [{name: hooks, unwrap: github}]",
            "sources.argoEvents.eventSources[0].unwrap",
            "'gitlab'",
        ),
        ("eventSources: []", "sources.argoEvents.eventSources", "at least 1 item"),
        ("deliver: last", "sources.argoEvents.deliver", "'new' or 'all'"),
        ("durable: a.b", "sources.argoEvents.durable", "should match pattern"),
    ],
)
def test_mistakes_name_the_field(tmp_path: Path, change: str, field: str, reason: str) -> None:
    key = change.split(":", 1)[0]
    text = "\n".join(
        line for line in YAML.splitlines() if not line.strip().startswith(("auth", "eventSources", "- ", key))
    )
    with pytest.raises(settings.ConfigError) as caught:
        load(tmp_path, text + f"\n    {change}\n")
    message = str(caught.value)
    assert f"glue.yaml: {field}" in message and reason in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        ("username: argo\n", "must hold username: and password:"),
        ("password: [unclosed\n", "is not YAML"),
    ],
)
def test_a_bad_auth_file_is_named_without_its_content(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "auth.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(settings.ConfigError) as caught:
        load(tmp_path, YAML.replace("AUTH_FILE", str(path)))
    message = str(caught.value)
    assert "sources.argoEvents.auth.file: " in message and str(path) in message and reason in message
    assert "unclosed" not in message


def test_event_sources_on_a_kafka_topic_need_the_bus_format(tmp_path: Path) -> None:
    text = """
sources:
  kafka:
    bootstrapServers: kafka:9092
    topics:
      - {name: t, format: cloudevents, eventSources: ["*"]}
"""
    with pytest.raises(settings.ConfigError, match="eventSources is for topics of format argo-eventbus"):
        load(tmp_path, text)


JETSTREAM = """
sources:
  jetstream:
    url: nats://nats.platform.svc:4222
    stream: platform
    subjects:
      - {subject: "ce.>", format: cloudevents}
      - {subject: "minio.*", format: minio}
      - {subject: "hooks.plain", format: argo, type: com.example.hook, source: /hooks, idField: meta.id}
"""


def test_the_jetstream_group_loads(tmp_path: Path) -> None:
    config = load(tmp_path, JETSTREAM).sources.jetstream
    assert config is not None
    assert (config.stream, config.durable, config.deliver) == ("platform", "runtime-glue", "new")
    assert [(s.subject, s.format) for s in config.subjects] == [
        ("ce.>", "cloudevents"),
        ("minio.*", "minio"),
        ("hooks.plain", "argo"),
    ]
    assert (config.subjects[2].type, config.subjects[2].source) == ("com.example.hook", "/hooks")


@pytest.mark.parametrize(
    ("subject", "field", "reason"),
    [
        ('{subject: "a.>.b", format: cloudevents}', "sources.jetstream.subjects[0].subject", "should match"),
        ('{subject: "a..b", format: cloudevents}', "sources.jetstream.subjects[0].subject", "should match"),
        ('{subject: "a", format: gitlab}', "sources.jetstream.subjects[0].format", "'cloudevents'"),
    ],
)
def test_jetstream_mistakes_name_the_field(tmp_path: Path, subject: str, field: str, reason: str) -> None:
    text = JETSTREAM.split("    subjects:")[0] + f"    subjects: [{subject}]\n"
    with pytest.raises(settings.ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert f"glue.yaml: {field}" in message and reason in message


def test_a_jetstream_source_names_its_stream(tmp_path: Path) -> None:
    text = "\n".join(line for line in JETSTREAM.splitlines() if not line.strip().startswith("stream:"))
    with pytest.raises(settings.ConfigError, match=r"sources\.jetstream\.stream"):
        load(tmp_path, text)
