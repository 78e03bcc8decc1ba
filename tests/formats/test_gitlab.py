"""GitLab webhooks, every hook kind (reference formats.md section 2: headers from web_hook_service.rb)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from glue import events
from glue.formats import gitlab
from tests.formats import payloads as p
from tests.formats.helpers import decode, digest_id, rejected, roundtrip

KINDS: list[tuple[Callable[[], dict[str, Any]], str, str, str | None]] = [
    (p.gitlab_push, "Push Hook", "gitlab.push", "refs/heads/main"),
    (
        lambda: p.gitlab_push("refs/tags/v1.4.0", kind="tag_push"),
        "Tag Push Hook",
        "gitlab.tag_push",
        "refs/tags/v1.4.0",
    ),
    (p.gitlab_merge_request, "Merge Request Hook", "gitlab.merge_request", "17"),
    (p.gitlab_pipeline, "Pipeline Hook", "gitlab.pipeline", "31337"),
    (p.gitlab_job, "Job Hook", "gitlab.build", "5550001"),
    (p.gitlab_note, "Note Hook", "gitlab.note", "1244"),
    (p.gitlab_issue, "Issue Hook", "gitlab.issue", "23"),
    (lambda: p.gitlab_issue(5, kind="work_item"), "Issue Hook", "gitlab.work_item", "5"),
    (p.gitlab_release, "Release Hook", "gitlab.release", "v1.4.0"),
    (p.gitlab_deployment, "Deployment Hook", "gitlab.deployment", "88"),
    (p.gitlab_wiki_page, "Wiki Page Hook", "gitlab.wiki_page", "runbooks/gpu"),
    (p.gitlab_system_repository_update, "System Hook", "gitlab.repository_update", "platform/inference"),
]


@pytest.mark.parametrize(("build", "header", "ce_type", "subject"), KINDS, ids=[k[2] for k in KINDS])
def test_every_hook_kind_decodes(
    build: Callable[[], dict[str, Any]], header: str, ce_type: str, subject: str | None
) -> None:
    body = build()
    [event] = decode(p.delivery("gitlab", body, p.gitlab_headers(header)))
    assert event.get_type() == ce_type
    assert event.get_subject() == subject
    assert event.get_id() == "b6f7b1c2-9a43-4d7e-8f3a-1c2d3e4f5a6b"
    assert event.get_extension("gitlabeventuuid") == "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"
    assert event.get_data() == body


def test_source_is_the_project_url() -> None:
    [event] = decode(p.delivery("gitlab", p.gitlab_push(), p.gitlab_headers()))
    assert events.identity(event) == f"{p.PROJECT_URL} b6f7b1c2-9a43-4d7e-8f3a-1c2d3e4f5a6b"


def test_source_falls_back_to_the_instance_then_the_endpoint() -> None:
    job = p.gitlab_job()  # job hooks carry no project object
    [event] = decode(p.delivery("gitlab", job, p.gitlab_headers("Job Hook")))
    assert event.get_source() == p.GITLAB_URL
    headers = p.gitlab_headers("Job Hook")
    del headers["x-gitlab-instance"]
    [configured] = decode(p.delivery("gitlab", job, headers), source="gitlab-ci")
    [bare] = decode(p.delivery("gitlab", job, headers))
    assert configured.get_source() == "gitlab-ci"
    assert bare.get_source() == "gitlab"


def test_a_resend_keeps_its_identity() -> None:
    """GitLab's "Resend request" reuses Idempotency-Key; X-Gitlab-Webhook-UUID changes per attempt."""
    first = p.gitlab_headers()
    resend = p.gitlab_headers(x_gitlab_webhook_uuid="ffffffff-0000-4000-8000-000000000000")
    [a], [b] = (
        decode(p.delivery("gitlab", p.gitlab_push(), first)),
        decode(p.delivery("gitlab", p.gitlab_push(), resend)),
    )
    assert events.identity(a) == events.identity(b)


def test_id_falls_back_in_the_documented_order() -> None:
    body = p.gitlab_push()
    headers = p.gitlab_headers(idempotency_key=None, webhook_id="msg_2Zx7")
    [by_webhook_id] = decode(p.delivery("gitlab", body, headers))
    assert by_webhook_id.get_id() == "msg_2Zx7"
    del headers["webhook-id"]
    [by_webhook_uuid] = decode(p.delivery("gitlab", body, headers))  # GitLab 16.2 to 17.3
    assert by_webhook_uuid.get_id() == "0d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a"
    del headers["x-gitlab-webhook-uuid"]
    [by_digest] = decode(p.delivery("gitlab", body, headers))  # before 16.2: X-Gitlab-Event-UUID only
    assert by_digest.get_id() == digest_id(body, p.RECEIVED_AT)
    assert isinstance(by_digest, events.Digested)
    assert by_digest.get_extension("gitlabeventuuid") == "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"


def test_events_sharing_the_recursion_detection_uuid_are_distinct() -> None:
    """X-Gitlab-Event-UUID is the same for every hook one request fires, and is passed on by a bot
    that calls GitLab's API with the header it received: without Idempotency-Key (before 17.4) the
    per-request X-Gitlab-Webhook-UUID tells the events apart."""
    shared = "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"
    first = p.gitlab_headers(idempotency_key=None, x_gitlab_event_uuid=shared)
    second = p.gitlab_headers(
        idempotency_key=None,
        x_gitlab_event_uuid=shared,
        x_gitlab_webhook_uuid="1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b",
    )
    [a] = decode(p.delivery("gitlab", p.gitlab_push(), first))
    [b] = decode(p.delivery("gitlab", p.gitlab_push(ref="refs/heads/next"), second))
    assert events.identity(a) != events.identity(b)
    assert a.get_extension("gitlabeventuuid") == b.get_extension("gitlabeventuuid") == shared


def test_kind_comes_from_the_header_as_a_last_resort() -> None:
    body = p.gitlab_push()
    del body["object_kind"], body["event_name"]
    for header, ce_type in [
        ("Push Hook", "gitlab.push"),
        ("Push Event", "gitlab.push"),
        ("Job Hook", "gitlab.build"),
    ]:
        [event] = decode(p.delivery("gitlab", body, p.gitlab_headers(header)))
        assert event.get_type() == ce_type


def test_object_kind_wins_over_the_header() -> None:
    [event] = decode(p.delivery("gitlab", p.gitlab_push(), p.gitlab_headers("Push Event")))
    assert event.get_type() == "gitlab.push"


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("Push Hook", "push"),
        ("Tag Push Hook", "tag_push"),
        ("Merge Request Hook", "merge_request"),
        ("Confidential Issue Hook", "issue"),
        ("Confidential Note Hook", "note"),
        ("Resource Access Token Hook", "access_token"),
        ("Feature Flag Hook", "feature_flag"),
        ("System Hook", "system"),
        ("!!", None),
    ],
)
def test_header_names_map_to_object_kinds(header: str, kind: str | None) -> None:
    assert gitlab.kind_from_header(header) == kind


def test_decoded_events_survive_the_journal_round_trip() -> None:
    [event] = decode(p.delivery("gitlab", p.gitlab_merge_request(), p.gitlab_headers("Merge Request Hook")))
    back = roundtrip(event)
    assert back.get_attributes() == event.get_attributes()
    assert back.get_data() == event.get_data()


def test_undated_events_are_dated_at_arrival() -> None:
    delivery = p.delivery("gitlab", p.gitlab_push(), p.gitlab_headers())
    [event] = decode(delivery)
    time = event.get_time()
    assert time is not None
    assert time.timestamp() == delivery.received_at


def test_a_body_without_any_kind_is_rejected() -> None:
    body = p.gitlab_push()
    del body["object_kind"], body["event_name"]
    headers = p.gitlab_headers()
    del headers["x-gitlab-event"]
    error = rejected(p.delivery("gitlab", body, headers))
    assert error.status == 400
    assert "cannot tell the GitLab event kind" in error.reason


def test_a_non_string_object_kind_is_rejected() -> None:
    body = p.gitlab_push() | {"object_kind": 12}
    error = rejected(p.delivery("gitlab", body, p.gitlab_headers()))
    assert (error.status, error.reason.startswith("'object_kind' must be a GitLab event kind")) == (400, True)


def test_truncated_body_is_rejected() -> None:
    raw = p.body(p.gitlab_push())[:-9]
    error = rejected(p.delivery("gitlab", raw, p.gitlab_headers()))
    assert error.status == 400
    assert error.reason.startswith("body is not valid JSON: ")


def test_form_encoded_bodies_are_unsupported() -> None:
    headers = p.gitlab_headers() | {"content-type": "application/x-www-form-urlencoded"}
    error = rejected(p.delivery("gitlab", b"payload=%7B%7D", headers))
    assert error.status == 415
    assert "application/x-www-form-urlencoded" in error.reason
