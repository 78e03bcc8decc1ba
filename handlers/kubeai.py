"""KubeAI: reload a Model (``kubeai.org/v1``) when its artifact changes.

KubeAI has no reload API, and an annotation on the Model does not roll its pods: only a change of the
generated pod spec does (KubeAI labels each pod with a hash of it and replaces out-of-date pods with
surge). So ``kubeai.reload`` changes the spec itself, by merge patch with the resourceVersion it read:

- ``url``: the new artifact (``s3://bucket/path`` from a MinIO event, ``ollama://model:tag`` or
  ``hf://org/model``), and/or ``image``: the engine image (a tag from a Harbor push);
- or, when neither is given (or ``envMarker`` is), ``spec.env[<envMarker>]`` set to a value derived from
  the event identity, so a replay of the same event writes nothing.

Nothing is sent when the Model already has these values. A Model with a ``cacheProfile`` is different:
KubeAI loads its cache once per Model UID (internal/modelcontroller/cache.go: the load Job runs when the
cache PVC's annotation names another UID) and its CRD refuses a url change (api/k8s/v1/model_types.go,
"url is immutable when using cacheProfile"). Rolling its pods, by an env marker, would start them on the
weights already cached and change nothing, so a reload of a cached Model by url or marker is refused as a
permanent error saying why (an ``image`` change is made: it changes the engine). ``url`` accepts exactly
the schemes the CRD takes for a url that can change: ``hf://``, ``pvc://``, ``ollama://``, ``s3://``
(``gs://`` and ``oss://`` are accepted only with a cacheProfile, whose url is immutable). With ``wait``,
the handler then polls until the Model reports its replicas ready, within ``waitTimeout`` and the
attempt's deadline; running out of time is a temporary error, and the retry only waits again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes

__all__ = ["DEFAULT_ENV_MARKER", "MODEL", "ReloadParams", "ready", "reload"]

MODEL = kubernetes.Resource("kubeai.org", "v1", "models", "Model")
DEFAULT_ENV_MARKER = "RUNTIME_GLUE_RELOAD"


class ReloadParams(kubernetes.Params):
    """``kubeai.reload``: which Model, and what changes."""

    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1, max_length=40)
    url: str | None = pydantic.Field(
        default=None,
        pattern=r"^(hf|pvc|ollama|s3)://",
        description="The new artifact; hf://, pvc://, ollama:// or s3:// (KubeAI's CRD rules).",
    )
    image: str | None = pydantic.Field(default=None, min_length=1)
    env_marker: str | None = pydantic.Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    wait: bool = False
    wait_timeout: float = pydantic.Field(default=600.0, gt=0)
    poll_interval: float = pydantic.Field(default=2.0, gt=0)
    wait_for_target: bool = False

    def changes(self, key: str) -> dict[str, Any]:
        """The spec fields to set."""
        spec: dict[str, Any] = {}
        if self.url:
            spec["url"] = self.url
        if self.image:
            spec["image"] = self.image
        if self.env_marker or not spec:
            spec["env"] = {self.env_marker or DEFAULT_ENV_MARKER: kubernetes.key_hash(key, 32)}
        return spec


RELOAD_RBAC = [glue.RbacRule(("kubeai.org",), ("models",), ("get", "patch"))]


def _applied(model: dict[str, Any], changes: dict[str, Any]) -> bool:
    spec = model.get("spec") or {}
    for field, value in changes.items():
        if field == "env":
            env = spec.get("env") or {}
            if any(env.get(name) != wanted for name, wanted in value.items()):
                return False
        elif spec.get(field) != value:
            return False
    return True


def _refuse_cached(model: dict[str, Any], changes: dict[str, Any], what: str) -> None:
    """A Model with a cacheProfile cannot be reloaded by url or env marker: say why, change nothing."""
    spec = model.get("spec") or {}
    profile = spec.get("cacheProfile")
    if not profile:
        return
    cached = f"{what} uses cacheProfile {profile!r}"
    if "url" in changes and changes["url"] != spec.get("url"):
        raise glue.PermanentError(
            f"{cached}: its url is immutable (KubeAI's CRD) and KubeAI loads the cache once per Model "
            "UID; recreate the Model with the new url to load it"
        )
    if "image" not in changes:
        raise glue.PermanentError(
            f"{cached}: KubeAI loads the cache once per Model UID, so rolling its pods would serve the "
            "weights already cached; recreate the Model (same spec, new UID) to load the artifact again"
        )


def _desired(model: dict[str, Any]) -> int:
    spec = model.get("spec") or {}
    desired = spec.get("replicas")
    return int(desired if desired is not None else spec.get("minReplicas") or 0)


def ready(model: dict[str, Any]) -> bool:
    """Whether the Model reports all its replicas ready and no extra (surge) pod pending."""
    replicas = (model.get("status") or {}).get("replicas") or {}
    total, up = int(replicas.get("all") or 0), int(replicas.get("ready") or 0)
    return up >= _desired(model) and total == up


@glue.handler("kubeai.reload", params=ReloadParams, rbac=RELOAD_RBAC, clients=["kubernetes"])
async def reload(*, event: CloudEvent, params: ReloadParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Make a KubeAI Model roll its pods onto a new artifact, once per event."""
    what = f"Model {params.namespace}/{params.name}"
    changes = params.changes(ctx.idempotency_key)
    body: dict[str, Any] = {"metadata": {"annotations": kubernetes.event_annotations(event)}, "spec": changes}
    call = kubernetes.merge_patch_call(
        MODEL.path(params.namespace, params.name),
        body,
        "with the resourceVersion read (409: re-read and retry)",
    )
    api = await kubernetes.client(ctx)
    if api is None:
        return glue.Plan([call], summary=f"reload {what} ({kubernetes.UNCHECKED})")
    per_request = kubernetes.request_timeout(api, ctx)

    async def attempt() -> tuple[bool, dict[str, Any]]:
        model = await kubernetes.read(api, MODEL, params.namespace, params.name, per_request=per_request)
        if model is None:
            raise kubernetes.missing(MODEL, params.name)
        if _applied(model, changes):
            return False, model
        _refuse_cached(model, changes, what)
        patch = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": model["metadata"]["resourceVersion"]},
        }
        patched = await kubernetes.merge_patch(
            api, MODEL, params.namespace, params.name, patch, dry_run=ctx.dry_run, per_request=per_request
        )
        return True, patched

    with kubernetes.errors(what, wait_for_target=params.wait_for_target):
        changed, model = await kubernetes.on_conflict(attempt, what)
    if ctx.dry_run:
        if not changed:
            return glue.Plan([], summary=f"{what} already runs this artifact: nothing to do")
        return glue.Plan([call], summary=f"reload {what} ({kubernetes.CHECKED})")
    ctx.log.info("kubeai model reload", target=what, changed=changed, fields=sorted(changes))
    if params.wait:
        await _wait_ready(api, params, ctx, model if changed else None, per_request)
    return None


async def _wait_ready(
    api: Any, params: ReloadParams, ctx: glue.Context, written: dict[str, Any] | None, per_request: float
) -> None:
    """Poll until the Model is ready; after our own write, first until its status moved on from it."""
    loop = asyncio.get_running_loop()
    limit = loop.time() + params.wait_timeout
    if ctx.deadline is not None:
        limit = min(limit, ctx.deadline - min(per_request, 1.0))
    what = f"Model {params.namespace}/{params.name}"
    seen_since_write = written is None
    baseline = (written or {}).get("status")
    while True:
        with kubernetes.errors(what):
            model = await kubernetes.read(api, MODEL, params.namespace, params.name, per_request=per_request)
        if model is None:
            raise glue.PermanentError(f"{what}: deleted while waiting for it to become ready")
        seen_since_write = seen_since_write or model.get("status") != baseline
        if (seen_since_write and ready(model)) or _desired(model) == 0:  # scaled to zero: nothing rolls
            ctx.log.debug("kubeai model ready", target=what)
            return
        if loop.time() + params.poll_interval > limit:
            replicas = (model.get("status") or {}).get("replicas") or {}
            raise glue.TemporaryError(
                f"{what}: not ready within {params.wait_timeout:g}s "
                f"(replicas all={replicas.get('all', 0)} ready={replicas.get('ready', 0)})"
            )
        await asyncio.sleep(params.poll_interval)
