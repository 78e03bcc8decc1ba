"""Credentials never reach the journal: events.scrub_headers, as the HTTP and Kafka sources use it."""

from __future__ import annotations

from types import SimpleNamespace

from glue import events
from glue.sources import kafka


def test_headers_without_credentials_are_kept_as_they_are() -> None:
    headers = {"content-type": "application/json", "ce-id": "1"}
    assert events.scrub_headers(headers) is headers


def test_credentials_are_dropped() -> None:
    headers = {"content-type": "application/json", "authorization": "Bearer x", "x-gitlab-token": "t"}
    assert events.scrub_headers(headers) == {"content-type": "application/json"}
    assert "authorization" in headers, "the caller's dict is left alone"


def test_an_endpoints_own_signature_header_is_dropped_too() -> None:
    drop = events.SENSITIVE_HEADERS.union(["x-my-signature"])
    headers = {"x-my-signature": "sha256=ab", "ce-id": "1"}
    assert events.scrub_headers(headers, drop) == {"ce-id": "1"}


def test_a_kafka_record_keeps_lower_case_names_and_no_credentials() -> None:
    record = SimpleNamespace(
        topic="t",
        headers=[("Content-Type", b"application/json"), ("Authorization", b"Bearer x"), ("ce_id", None)],
        value=b"{}",
        key=None,
    )
    delivery = kafka.delivery_of(record, "cloudevents")
    assert delivery.headers == {"content-type": "application/json", "ce_id": ""}
