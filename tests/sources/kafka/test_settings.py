"""The ``sources.kafka`` settings group: what an operator writes, what a mistake looks like."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import yaml

from glue import settings
from glue.sources import kafka

YAML = """
sources:
  kafka:
    bootstrapServers: kafka-0.kafka:9093, kafka-1.kafka:9093
    groupId: glue-prod
    topics:
      - {name: model-events, format: cloudevents}
      - {name: minio-notify, format: minio}
      - name: argo-triggers
        format: argo
        type: io.argoproj.sensor.trigger
        source: argo-events
        idHeader: X-Event-Id
    sasl:
      mechanism: SCRAM-SHA-512
      username: glue
      password: {file: PASSWORD_FILE}
"""


def load(tmp_path: Path, text: str) -> settings.Settings:
    path = tmp_path / "glue.yaml"
    path.write_text(text)
    return settings.load(path)


def test_a_full_kafka_group_loads(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    config = load(tmp_path, YAML.replace("PASSWORD_FILE", str(secret))).sources.kafka
    assert config is not None
    assert config.bootstrap_servers == ["kafka-0.kafka:9093", "kafka-1.kafka:9093"]
    assert [(t.name, t.format) for t in config.topics] == [
        ("model-events", "cloudevents"),
        ("minio-notify", "minio"),
        ("argo-triggers", "argo"),
    ]
    options = kafka.client_options(config)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "hunter2"


def test_the_environment_fills_in_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Deployment sets the brokers and group per environment; the topics stay in the file.
    monkeypatch.setenv("GLUE_SOURCES__KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("GLUE_SOURCES__KAFKA__GROUP_ID", "glue-staging")
    config = load(tmp_path, "sources:\n  kafka:\n    topics: [{name: t, format: minio}]\n").sources.kafka
    assert config is not None
    assert config.bootstrap_servers == ["kafka-0:9092", "kafka-1:9092"]
    assert config.group_id == "glue-staging"


def test_tls_with_sasl_is_sasl_ssl_and_verifies_the_broker(tmp_path: Path) -> None:
    config = settings.Kafka.model_validate(
        {
            "bootstrapServers": ["k:9093"],
            "topics": [{"name": "t", "format": "cloudevents"}],
            "tls": {},
            "sasl": {"mechanism": "PLAIN", "username": "u", "password": {"value": "s3cr3t-value"}},
        }
    )
    options = kafka.client_options(config)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_password"] == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(config) and "s3cr3t-value" not in str(config.model_dump())
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (
            {"topics": [{"name": "t", "format": "cloudevents"}]},
            "sources.kafka.bootstrapServers: Field required",
        ),
        ({"bootstrapServers": "k:9092", "topics": []}, "sources.kafka.topics"),
        ({"bootstrapServers": "k:9092", "topics": [{"name": "t", "format": "harbour"}]}, "topics[0].format"),
        (
            {
                "bootstrapServers": "k:9092",
                "topics": [{"name": "t", "format": "minio"}, {"name": "t", "format": "argo"}],
            },
            "topics listed twice: t",
        ),
        (
            {
                "bootstrapServers": "k:9092",
                "topics": [{"name": "t", "format": "minio"}],
                "sasl": {"username": "u", "password": {"env": "GLUE_TEST_UNSET_KAFKA_PASSWORD"}},
            },
            "sources.kafka.sasl.password: environment variable GLUE_TEST_UNSET_KAFKA_PASSWORD is not set",
        ),
        (
            {
                "bootstrapServers": "k:9092",
                "topics": [{"name": "t", "format": "minio"}],
                "tls": {"certFile": "c"},
            },
            "keyFile",
        ),
    ],
)
def test_mistakes_name_the_field(tmp_path: Path, group: dict[str, object], message: str) -> None:
    with pytest.raises(settings.ConfigError) as caught:
        load(tmp_path, yaml.safe_dump({"sources": {"kafka": group}}))
    assert message in str(caught.value)
    assert str(tmp_path / "glue.yaml") in str(caught.value)
