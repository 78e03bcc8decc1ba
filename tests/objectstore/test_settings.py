"""The sources.minio and archive settings groups: what `glue check` says about a wrong one (the file,
the field, the reason), and environment overrides of the documented keys."""

from __future__ import annotations

from typing import Any

import pytest

from glue import settings as settings_mod


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(settings_mod.ConfigError) as caught:
        settings_mod.from_mapping(data, "glue.yaml")
    return str(caught.value)


def test_unknown_event_name_is_named() -> None:
    text = _problems(
        {
            "sources": {
                "minio": {
                    "endpoint": "minio:9000",
                    "buckets": [{"name": "models", "events": ["ObjectCreated"]}],
                }
            }
        }
    )
    assert (
        "glue.yaml: sources.minio.buckets[0].events[0]: Value error, 'ObjectCreated' is not an event name "
        "MinIO accepts; e.g. s3:ObjectCreated:*, s3:ObjectRemoved:Delete" in text
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        (
            "s3:Scanner:*",
            "MinIO knows s3:Scanner:ManyVersions, s3:Scanner:LargeVersions, s3:Scanner:BigPrefix",
        ),
        (
            "s3:ObjectCreated:PutObject",
            "MinIO knows s3:ObjectCreated:*, s3:ObjectCreated:CompleteMultipartUpload",
        ),
        ("s3:ObjectRemoved:DeleteMarker", "MinIO knows s3:ObjectRemoved:*, s3:ObjectRemoved:Delete"),
        ("s3:Bucket:*", "e.g. s3:ObjectCreated:*"),
    ],
)
def test_event_names_minio_refuses_are_refused_by_check(name: str, hint: str) -> None:
    """Names that look right but minio internal/event/name.go ParseName does not know: MinIO would
    answer the listen request 400 InvalidArgument and the stream would stay down."""
    text = _problems(
        {"sources": {"minio": {"endpoint": "minio:9000", "buckets": [{"name": "models", "events": [name]}]}}}
    )
    assert (
        f"glue.yaml: sources.minio.buckets[0].events[0]: Value error, {name!r} is not an event name" in text
    )
    assert hint in text


def test_event_names_minio_accepts_pass_check() -> None:
    loaded = settings_mod.from_mapping(
        {
            "sources": {
                "minio": {
                    "endpoint": "minio:9000",
                    "buckets": [{"name": "models", "events": ["s3:Scanner:BigPrefix", "s3:ObjectRestore:*"]}],
                }
            }
        },
        "glue.yaml",
    )
    assert loaded.sources.minio is not None
    assert loaded.sources.minio.buckets[0].events == ["s3:Scanner:BigPrefix", "s3:ObjectRestore:*"]


def test_key_without_secret_and_bucket_listed_twice() -> None:
    assert "give both accessKey and secretKey, or neither" in _problems(
        {"sources": {"minio": {"endpoint": "minio:9000", "accessKey": {"env": "X"}}}}
    )
    assert "a bucket is listed twice" in _problems(
        {
            "sources": {
                "minio": {"endpoint": "minio:9000", "buckets": [{"name": "models"}, {"name": "models"}]}
            }
        }
    )


def test_ca_file_needs_tls_and_endpoint_has_no_scheme() -> None:
    assert "caFile needs secure: true" in _problems(
        {"sources": {"minio": {"endpoint": "minio:9000", "secure": False, "caFile": "/etc/ca.pem"}}}
    )
    assert "sources.minio.endpoint: String should match pattern" in _problems(
        {"sources": {"minio": {"endpoint": "https://minio:9000"}}}
    )


def test_archive_needs_the_minio_connection() -> None:
    assert "archive needs sources.minio" in _problems({"archive": {"bucket": "glue-archive"}})


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_SOURCES__MINIO__ENDPOINT", "minio.platform.svc:9000")
    monkeypatch.setenv("GLUE_SOURCES__MINIO__PING_SECONDS", "15")
    monkeypatch.setenv("GLUE_ARCHIVE__BUCKET", "glue-archive")
    loaded = settings_mod.from_mapping({}, "env")
    assert loaded.sources.minio is not None
    assert loaded.sources.minio.endpoint == "minio.platform.svc:9000"
    assert loaded.sources.minio.ping_seconds == 15
    assert loaded.archive is not None and loaded.archive.bucket == "glue-archive"
    assert loaded.archive.dead_letters and not loaded.archive.recordings


def test_enrich_needs_the_minio_connection() -> None:
    text = _problems({"routes": [{"name": "r", "handler": "log", "enrich": {"tags": True}}]})
    assert "routes[0].enrich needs sources.minio" in text
