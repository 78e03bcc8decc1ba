"""Builders of inbound payloads, written from the documented wire formats (docs/reference/formats.md
sections 1-5): Harbor Default and CloudEvents bodies, GitLab hook bodies and headers, MinIO records in
the target envelope and as listen-stream lines, Argo trigger bodies, CloudEvents in every mode.

Each builder returns plain Python data (or bytes for ready bodies) so a test can vary one field.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from glue import events

HARBOR_CE_SOURCE = "/projects/2/webhook/policies/15"


def body(value: Any) -> bytes:
    return orjson.dumps(value)


#: When every delivery built here arrived (2025-11-28T00:00:00Z).
RECEIVED_AT = 1_764_288_000.0


def delivery(
    fmt: str,
    payload: Any,
    headers: dict[str, str] | None = None,
    *,
    transport: str = "http",
    key: bytes | None = None,
) -> events.Delivery:
    raw = payload if isinstance(payload, bytes) else body(payload)
    return events.Delivery(
        transport=transport,
        endpoint="test",
        format=fmt,
        headers=headers or {},
        body=raw,
        received_at=RECEIVED_AT,
        key=key,
    )


# -- Harbor ------------------------------------------------------------------------------------------

HARBOR_DIGEST = "sha256:5d5e3c1b0a7f9e2d4c6b8a0f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e9d"


def harbor_event_data(repo: str = "platform/models/llama", tag: str = "v1.2.3") -> dict[str, Any]:
    namespace, _, name = repo.partition("/")
    return {
        "resources": [
            {
                "digest": HARBOR_DIGEST,
                "tag": tag,
                "resource_url": f"harbor.example.org/{repo}:{tag}",
            }
        ],
        "repository": {
            "date_created": 1_764_000_000,
            "name": name,
            "namespace": namespace,
            "repo_full_name": repo,
            "repo_type": "private",
        },
    }


def harbor_default(
    kind: str = "PUSH_ARTIFACT", *, occur_at: int = 1_764_288_123, operator: str = "ci-robot", **data: Any
) -> dict[str, Any]:
    """Default format: {type, occur_at, operator, event_data} (harbor src/pkg/notifier/model)."""
    return {"type": kind, "occur_at": occur_at, "operator": operator, "event_data": harbor_event_data(**data)}


def harbor_ce(
    ce_type: str = "harbor.artifact.pushed",
    *,
    event_id: str = "3f0e8c9a-1b2d-4e5f-8a9b-0c1d2e3f4a5b",
    time: str = "2025-11-28T00:02:03Z",
    operator: str = "ci-robot",
    **data: Any,
) -> dict[str, Any]:
    """CloudEvents format: structured mode, data = event_data, requestid/operator extensions."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "requestid": "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a",
        "source": HARBOR_CE_SOURCE,
        "type": ce_type,
        "datacontenttype": "application/json",
        "time": time,
        "data": harbor_event_data(**data),
        "operator": operator,
    }


HARBOR_JSON = {"content-type": "application/json", "user-agent": "Go-http-client/1.1"}
HARBOR_CE_JSON = {"content-type": "application/cloudevents+json", "user-agent": "Go-http-client/1.1"}


# -- GitLab ------------------------------------------------------------------------------------------

GITLAB_URL = "https://gitlab.example.org"
PROJECT_URL = f"{GITLAB_URL}/platform/inference"


def gitlab_project() -> dict[str, Any]:
    return {
        "id": 42,
        "name": "inference",
        "web_url": PROJECT_URL,
        "path_with_namespace": "platform/inference",
        "default_branch": "main",
    }


def gitlab_headers(
    event: str = "Push Hook",
    *,
    idempotency_key: str | None = "b6f7b1c2-9a43-4d7e-8f3a-1c2d3e4f5a6b",
    **more: str,
) -> dict[str, str]:
    """The headers web_hook_service.rb#build_headers sends (token already scrubbed by intake)."""
    headers = {
        "content-type": "application/json",
        "user-agent": "GitLab/18.6.0",
        "x-gitlab-event": event,
        "x-gitlab-webhook-uuid": "0d4e5f6a-7b8c-4d9e-8f0a-1b2c3d4e5f6a",
        "x-gitlab-instance": GITLAB_URL,
        "x-gitlab-event-uuid": "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d",
    }
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    headers.update({name.replace("_", "-"): value for name, value in more.items()})
    return headers


def _user() -> dict[str, Any]:
    return {"id": 7, "name": "Ada Lovelace", "username": "ada", "email": "[REDACTED]"}


def gitlab_push(ref: str = "refs/heads/main", kind: str = "push") -> dict[str, Any]:
    return {
        "object_kind": kind,
        "event_name": kind,
        "before": "0" * 40,
        "after": "a" * 40,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": "a" * 40,
        "user_id": 7,
        "user_username": "ada",
        "project_id": 42,
        "project": gitlab_project(),
        "commits": [{"id": "a" * 40, "message": "Bump model", "title": "Bump model"}],
        "total_commits_count": 1,
    }


def gitlab_merge_request(iid: int = 17) -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": _user(),
        "project": gitlab_project(),
        "object_attributes": {
            "id": 9001,
            "iid": iid,
            "title": "Serve llama 3",
            "state": "opened",
            "action": "open",
            "source_branch": "llama3",
            "target_branch": "main",
            "url": f"{PROJECT_URL}/-/merge_requests/{iid}",
        },
        "labels": [],
        "changes": {},
    }


def gitlab_pipeline(pipeline_id: int = 31337) -> dict[str, Any]:
    return {
        "object_kind": "pipeline",
        "object_attributes": {"id": pipeline_id, "iid": 12, "ref": "main", "status": "success", "stages": []},
        "user": _user(),
        "project": gitlab_project(),
        "commit": {"id": "a" * 40},
        "builds": [],
    }


def gitlab_job(build_id: int = 5550001) -> dict[str, Any]:
    """Job hook: object_kind "build", no project object (repository only)."""
    return {
        "object_kind": "build",
        "ref": "main",
        "tag": False,
        "sha": "a" * 40,
        "build_id": build_id,
        "build_name": "deploy",
        "build_stage": "deploy",
        "build_status": "success",
        "pipeline_id": 31337,
        "project_id": 42,
        "project_name": "Platform / inference",
        "user": _user(),
        "repository": {"name": "inference", "homepage": PROJECT_URL},
    }


def gitlab_note(note_id: int = 1244) -> dict[str, Any]:
    return {
        "object_kind": "note",
        "event_type": "note",
        "user": _user(),
        "project_id": 42,
        "project": gitlab_project(),
        "object_attributes": {"id": note_id, "note": "LGTM", "noteable_type": "MergeRequest"},
    }


def gitlab_issue(iid: int = 23, kind: str = "issue") -> dict[str, Any]:
    return {
        "object_kind": kind,
        "event_type": kind,
        "user": _user(),
        "project": gitlab_project(),
        "object_attributes": {
            "id": 301,
            "iid": iid,
            "title": "GPU quota",
            "state": "opened",
            "action": "open",
        },
    }


def gitlab_release(tag: str = "v1.4.0") -> dict[str, Any]:
    return {
        "id": 3,
        "created_at": "2025-11-27 23:00:00 UTC",
        "name": tag,
        "tag": tag,
        "object_kind": "release",
        "project": gitlab_project(),
        "url": f"{PROJECT_URL}/-/releases/{tag}",
        "action": "create",
    }


def gitlab_deployment(deployment_id: int = 88) -> dict[str, Any]:
    return {
        "object_kind": "deployment",
        "status": "success",
        "deployment_id": deployment_id,
        "deployable_id": 5550001,
        "environment": "production",
        "project": gitlab_project(),
        "ref": "main",
        "user": _user(),
    }


def gitlab_wiki_page(slug: str = "runbooks/gpu") -> dict[str, Any]:
    return {
        "object_kind": "wiki_page",
        "user": _user(),
        "project": gitlab_project(),
        "wiki": {"web_url": f"{PROJECT_URL}/-/wikis/home"},
        "object_attributes": {"title": "GPU runbook", "slug": slug, "action": "update"},
    }


def gitlab_system_repository_update() -> dict[str, Any]:
    """System hook: event_name only, no object_kind ("System Hook" header)."""
    return {
        "event_name": "repository_update",
        "user_id": 1,
        "user_name": "Administrator",
        "project_id": 42,
        "project": gitlab_project(),
        "changes": [{"before": "0" * 40, "after": "a" * 40, "ref": "refs/heads/main"}],
        "refs": ["refs/heads/main"],
    }


# -- MinIO -------------------------------------------------------------------------------------------


def minio_record(
    key: str = "models/llama/weights.safetensors",
    *,
    bucket: str = "models",
    event_name: str = "s3:ObjectCreated:Put",
    escaped: bool = True,
    version_id: str | None = "1",
    sequencer: str = "187C3D4A5B6C7D8E",
    size: int = 4_200_000,
    request_id: str | None = "187C3D4A5B6C7D8E",
    event_time: str = "2025-11-28T00:01:02.345Z",
) -> dict[str, Any]:
    """One S3 event record (minio internal/event/event.go, built by cmd/event-notification.go
    ToEvent); ``escaped`` as targets send the key. ``request_id``: None for an event MinIO makes
    itself (lifecycle, replication, scanner), whose record has no request id."""
    import urllib.parse

    obj: dict[str, Any] = {
        "key": urllib.parse.quote_plus(key) if escaped else key,
        "sequencer": sequencer,
    }
    if not event_name.startswith("s3:ObjectRemoved"):
        obj |= {
            "size": size,
            "eTag": "d41d8cd98f00b204e9800998ecf8427e",
            "contentType": "application/octet-stream",
            "userMetadata": {"content-type": "application/octet-stream"},
        }
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": event_time,
        "eventName": event_name,
        "userIdentity": {"principalId": "uploader"},
        "requestParameters": {"principalId": "uploader", "region": "", "sourceIPAddress": "10.0.0.9"},
        "responseElements": {
            "x-amz-request-id": request_id or "",
            "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8"
            if request_id
            else "",
            "x-minio-origin-endpoint": "http://minio:9000",
            "x-minio-deployment-id": "8b0e4c5a-2d43-4c1e-9a51-7f2d0c3f5b11",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "uploader"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
        "source": {"host": "10.0.0.9", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.90"},
    }


def minio_envelope(record: dict[str, Any]) -> dict[str, Any]:
    """Webhook / Kafka target value: {EventName, Key: bucket/unescaped key, Records: [record]}."""
    import urllib.parse

    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    return {"EventName": record["eventName"], "Key": f"{bucket}/{key}", "Records": [copy.deepcopy(record)]}


def minio_listen_line(record: dict[str, Any]) -> bytes:
    """One newline-delimited ListenBucketNotification line: {"Records": [record]} with no envelope."""
    return orjson.dumps({"Records": [record]}) + b"\n"


# -- CloudEvents -------------------------------------------------------------------------------------


def ce_structured(
    *,
    event_id: str = "evt-0001",
    source: str = "/platform/registry",
    ce_type: str = "org.example.model.published",
    data: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": ce_type,
        "time": "2025-11-28T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"model": "llama-3-8b", "version": 3} if data is None else data,
    }
    event.update(extra)
    return event


def ce_binary_headers(
    *,
    event_id: str = "evt-0001",
    source: str = "/platform/registry",
    ce_type: str = "org.example.model.published",
    **extra: str,
) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": ce_type,
        "ce-time": "2025-11-28T00:00:00Z",
        "content-type": "application/json",
    }
    headers.update(extra)
    return headers


def argo_context(event_id: str = "5d1f0e3c2b4a49688f7e6d5c4b3a2910") -> dict[str, Any]:
    """An Argo Events event context (pkg/eventsources/eventing.go): id is 32 hex chars."""
    return {
        "id": event_id,
        "source": "gitlab-events",
        "specversion": "1.0",
        "type": "webhook",
        "datacontenttype": "application/json",
        "subject": "push",
        "time": "2025-11-28T00:00:00Z",
    }
