"""Harbor webhooks, both payload formats of a webhook policy target.

- ``Default`` (``Content-Type: application/json``): ``{type, occur_at, operator, event_data}``. It has
  no id, so the id is a digest of the canonical payload that deduplicates within the endpoint's
  ``dedupWindow`` (a Harbor retry resends the same body minutes later; the payload changes only with
  ``occur_at``, in whole seconds, so the same body later is another event); the source is the
  endpoint's ``source`` option or ``harbor``; ``time`` is ``occur_at``; ``subject`` is
  ``event_data.repository.repo_full_name``; the ``operator`` extension is kept.
- ``CloudEvents`` (``application/cloudevents+json``, structured mode): attributes as sent (``id``,
  ``source`` = ``/projects/{id}/webhook/policies/{id}``, ``requestid`` and ``operator`` extensions).

Both forms carry Harbor's CloudEvents type names and ``event_data`` as ``data``, so one routing rule
matches either. Upstream: goharbor/harbor ``src/pkg/notifier/formats/{default,cloudevents}.go``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from glue import events
from glue.formats import _common, _digest, base

__all__ = ["TYPES", "decode"]

#: Default ``type`` -> CloudEvents ``type`` (``cloudevents.go:eventTypeMapping``).
TYPES: Final[dict[str, str]] = {
    "PUSH_ARTIFACT": "harbor.artifact.pushed",
    "PULL_ARTIFACT": "harbor.artifact.pulled",
    "DELETE_ARTIFACT": "harbor.artifact.deleted",
    "SCANNING_COMPLETED": "harbor.scan.completed",
    "SCANNING_FAILED": "harbor.scan.failed",
    "SCANNING_STOPPED": "harbor.scan.stopped",
    "QUOTA_EXCEED": "harbor.quota.exceeded",
    "QUOTA_WARNING": "harbor.quota.warned",
    "REPLICATION": "harbor.replication.status.changed",
    "TAG_RETENTION": "harbor.tag_retention.finished",
}


def _default(payload: dict[str, Any], delivery: events.Delivery, options: base.Options) -> events.CloudEvent:
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise base.DecodeError(f"'type' must be a string, got {_common.kind(kind)}")
    ce_type = TYPES.get(kind)
    if ce_type is None:
        raise base.DecodeError(
            f"unknown Harbor event type {_common.clip(kind)}; expected one of {', '.join(TYPES)}"
        )
    occur_at = payload.get("occur_at")
    if not isinstance(occur_at, int) or isinstance(occur_at, bool):
        raise base.DecodeError(f"'occur_at' must be a Unix time in seconds, got {_common.kind(occur_at)}")
    try:
        time = dt.datetime.fromtimestamp(occur_at, dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise base.DecodeError(f"'occur_at' {occur_at} is out of range") from None
    operator = payload.get("operator", "")
    if not isinstance(operator, str):
        raise base.DecodeError(f"'operator' must be a string, got {_common.kind(operator)}")
    event_data = payload.get("event_data")
    if event_data is not None and not isinstance(event_data, dict):
        raise base.DecodeError(f"'event_data' must be an object, got {_common.kind(event_data)}")
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "source": options.source or "harbor",
        "type": ce_type,
        "time": time,
        "datacontenttype": _common.JSON,
        "operator": operator,
    }
    subject = _common.path(event_data, "repository", "repo_full_name")
    if isinstance(subject, str) and subject:
        attributes["subject"] = subject
    return _digest.event(attributes, event_data, delivery, options, payload=payload)


@base.register("harbor")
def decode(delivery: events.Delivery, options: base.Options) -> list[events.CloudEvent]:
    mt = _common.media_type(delivery.headers)
    if mt == _common.CE_JSON:
        return [_common.structured(_common.load_json(delivery.body), _common.factory(delivery))]
    if mt not in (None, _common.JSON):
        raise base.UnsupportedMediaType(
            f"content type {_common.clip(mt)} is not a Harbor payload format: "
            f"expected {_common.JSON} (Default) or {_common.CE_JSON} (CloudEvents)"
        )
    payload = _common.load_object(delivery.body)
    if mt is None and "specversion" in payload:
        # Harbor always labels its bodies; without a label, a CloudEvents body tells itself apart.
        return [_common.structured(payload, _common.factory(delivery))]
    return [_default(payload, delivery, options)]
