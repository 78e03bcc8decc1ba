"""GitLab webhooks (project, group and system hooks), every hook kind.

- ``type``: ``gitlab.<object_kind>`` (``gitlab.push``, ``gitlab.merge_request``, ``gitlab.build`` for
  jobs ...); system hooks without ``object_kind`` use ``event_name``; failing both, the
  ``X-Gitlab-Event`` header (``Push Hook`` -> ``push``).
- ``id``: the ``Idempotency-Key`` header (GitLab 17.4 and later), which GitLab keeps across resends of
  one event; else the Standard Webhooks ``webhook-id`` (equal to it where sent); else
  ``X-Gitlab-Webhook-UUID`` (16.2 and later: new for every request, so a resend is another event);
  else a digest of the body that deduplicates within the endpoint's ``dedupWindow``.
  ``X-Gitlab-Event-UUID`` is never the id: it is GitLab's recursion-detection UUID
  (``lib/gitlab/web_hooks/recursion_detection/uuid.rb``), one value for every hook a request fires and
  passed on to the hooks of a request that carried it, so distinct events share it. It is kept as the
  ``gitlabeventuuid`` extension, for correlation.
- ``source``: ``project.web_url``, else ``X-Gitlab-Instance``, else the endpoint's ``source`` option,
  else ``gitlab``.
- ``subject``: the ref for pushes, else the natural key of the object (MR/issue iid, pipeline id ...).
- ``data``: the body. ``time``: the arrival of the delivery (bodies use several time formats).

Upstream: gitlabhq ``app/services/web_hook_service.rb`` (headers), ``doc/user/project/integrations/
webhook_events.md`` (payloads).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from glue import events
from glue.formats import _common, _digest, base

__all__ = ["decode", "kind_from_header"]

_KIND = re.compile(r"[a-z0-9_]{1,64}")

#: Where the natural subject of each kind sits in the body.
_SUBJECT: Final[dict[str, tuple[str, ...]]] = {
    "push": ("ref",),
    "tag_push": ("ref",),
    "merge_request": ("object_attributes", "iid"),
    "issue": ("object_attributes", "iid"),
    "work_item": ("object_attributes", "iid"),
    "note": ("object_attributes", "id"),
    "pipeline": ("object_attributes", "id"),
    "build": ("build_id",),
    "deployment": ("deployment_id",),
    "release": ("tag",),
    "wiki_page": ("object_attributes", "slug"),
    "feature_flag": ("object_attributes", "name"),
    "emoji": ("object_attributes", "id"),
    "access_token": ("object_attributes", "name"),
    "vulnerability": ("object_attributes", "url"),
    # System hooks (event_name)
    "repository_update": ("project", "path_with_namespace"),
    "project_create": ("path_with_namespace",),
    "project_destroy": ("path_with_namespace",),
    "project_rename": ("path_with_namespace",),
    "project_transfer": ("path_with_namespace",),
    "project_update": ("path_with_namespace",),
    "user_create": ("username",),
    "user_destroy": ("username",),
    "user_rename": ("username",),
    "group_create": ("full_path",),
    "group_destroy": ("full_path",),
    "group_rename": ("full_path",),
}

#: Header kinds whose object_kind differs from the header's name.
_HEADER_KINDS: Final[dict[str, str]] = {
    "job": "build",
    "confidential_issue": "issue",
    "confidential_note": "note",
    "resource_access_token": "access_token",
    "system": "system",
}


def kind_from_header(value: str) -> str | None:
    """``Push Hook`` -> ``push``, ``Job Hook`` -> ``build``; the UI's old ``Push Event`` works too."""
    words = value.strip().lower().split()
    if words and words[-1] in ("hook", "event"):
        words = words[:-1]
    name = "_".join(words)
    name = _HEADER_KINDS.get(name, name)
    return name if _KIND.fullmatch(name) else None


def _kind(body: dict[str, Any], headers: Mapping[str, str]) -> str:
    for field in ("object_kind", "event_name"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not _KIND.fullmatch(value.lower()):
            raise base.DecodeError(
                f"{field!r} must be a GitLab event kind (lower-case letters, digits, '_'), "
                f"got {_common.clip(value)}"
            )
        return value.lower()
    header = headers.get("x-gitlab-event")
    if header:
        found = kind_from_header(header)
        if found is not None:
            return found
    raise base.DecodeError(
        "cannot tell the GitLab event kind: the body has no 'object_kind' or 'event_name' "
        "and there is no usable X-Gitlab-Event header"
    )


@base.register("gitlab")
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    mt = _common.media_type(delivery.headers)
    if mt not in (None, _common.JSON):
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not a GitLab webhook: expected {_common.JSON}"
        )
    body = _common.load_object(delivery.body)
    headers = delivery.headers
    kind = _kind(body, headers)
    event_uuid = headers.get("x-gitlab-event-uuid") or None
    event_id = (
        headers.get("idempotency-key") or headers.get("webhook-id") or headers.get("x-gitlab-webhook-uuid")
    )
    source = (
        _common.scalar(_common.path(body, "project", "web_url"))
        or headers.get("x-gitlab-instance")
        or options.source
        or "gitlab"
    )
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "source": source,
        "type": f"gitlab.{kind}",
        "datacontenttype": _common.JSON,
    }
    where = _SUBJECT.get(kind)
    subject = _common.scalar(_common.path(body, *where)) if where else None
    if subject is not None:
        attributes["subject"] = subject
    if event_uuid is not None:
        attributes["gitlabeventuuid"] = event_uuid
    default_time = _common.received_time(delivery)
    if not event_id:
        return [_digest.event(attributes, body, delivery, options, default_time=default_time)]
    attributes["id"] = event_id
    return [_common.cloudevent(attributes, body, default_time=default_time)]
