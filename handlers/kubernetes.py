"""Kubernetes: the shared API client, the API error policy, and rollout restart.

The other Kubernetes handler modules (``externaldns``, ``certmanager``, ``kubeai``, ``argo``) build on
what is here:

- the shared ``kubernetes`` client: one kubernetes-asyncio ``ApiClient`` for the daemon, configured by
  ``clients.kubernetes`` in the settings (in-cluster service account or a kubeconfig file and context),
  closed when the daemon stops;
- :func:`errors`: the API server's answers turned into what the executor should do next (409 is the
  caller's to retry; 404 permanent unless the route waits for its target; 400/403/422 permanent with the
  server's message; 401/429/5xx and connection errors temporary, honouring ``Retry-After``);
- :func:`event_annotations`: the CloudEvent id, source and traceparent that every object we create or
  change carries, so an operator can go from an object back to the event;
- :func:`rollout_restart`: what ``kubectl rollout restart`` does (the ``restartedAt`` pod-template
  annotation by strategic merge patch), with a value chosen by the caller so a replay changes nothing.

Every request that may change state passes its content type explicitly and, in dry-run, ``dryRun=All``
so that the API server checks the plan without persisting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import pydantic
import yaml
from cloudevents.core.v1.event import CloudEvent
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from pydantic.alias_generators import to_camel

import glue

__all__ = [
    "ANNOTATION_EVENT_ID",
    "ANNOTATION_EVENT_SOURCE",
    "ANNOTATION_TRACEPARENT",
    "APPLY_PATCH",
    "FIELD_MANAGER",
    "JSON_PATCH",
    "MERGE_PATCH",
    "RESTARTED_AT",
    "STRATEGIC_MERGE_PATCH",
    "ApiException",
    "KubernetesConfig",
    "Params",
    "Resource",
    "Restart",
    "RestartParams",
    "api_client",
    "apply_call",
    "client",
    "converge",
    "core_v1",
    "custom_objects",
    "delete",
    "errors",
    "event_annotations",
    "event_labels",
    "key_hash",
    "manifest",
    "merge_patch",
    "merge_patch_call",
    "missing",
    "networking_v1",
    "on_conflict",
    "read",
    "rollout_restart",
    "server_side_apply",
    "status_message",
    "write_options",
]

#: The field manager named in every write (``metadata.managedFields`` shows who owns what).
FIELD_MANAGER = "runtime-glue"

ANNOTATION_PREFIX = "runtime-glue.io/"
ANNOTATION_EVENT_ID = ANNOTATION_PREFIX + "event-id"
ANNOTATION_EVENT_SOURCE = ANNOTATION_PREFIX + "event-source"
ANNOTATION_TRACEPARENT = ANNOTATION_PREFIX + "traceparent"
#: Pod-template annotation naming the event a restart came from: a different event always rolls.
ANNOTATION_RESTART_KEY = ANNOTATION_PREFIX + "restart-key"
LABEL_EVENT = ANNOTATION_PREFIX + "event"
LABEL_ROUTE = ANNOTATION_PREFIX + "route"

#: The pod-template annotation ``kubectl rollout restart`` sets.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

CONFLICT_ATTEMPTS = 5

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- client


class KubernetesConfig(pydantic.BaseModel):
    """``clients.kubernetes``: how the daemon reaches the API server.

    With neither ``inCluster`` nor ``kubeconfig`` set, the in-cluster service account is used when the
    daemon runs in a pod (``KUBERNETES_SERVICE_HOST`` set), else the default kubeconfig.
    """

    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    in_cluster: bool | None = pydantic.Field(
        default=None, description="Use the pod's service account (token and CA under /var/run/secrets)."
    )
    kubeconfig: Path | None = pydantic.Field(default=None, description="A kubeconfig file.")
    context: str | None = pydantic.Field(default=None, description="The kubeconfig context to use.")
    request_timeout: float = pydantic.Field(
        default=30.0, gt=0, description="Upper bound of one API request, in seconds."
    )

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> KubernetesConfig:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("inCluster excludes kubeconfig and context")
        return self


def _configured(config: KubernetesConfig) -> bool:
    """A cluster is configured: named in the settings, the pod's own, or a kubeconfig file exists."""
    if config.in_cluster or config.kubeconfig is not None or _in_pod():
        return True
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep)
    return any(Path(p).expanduser().is_file() for p in [*filter(None, paths), "~/.kube/config"])


def _describe(config: KubernetesConfig) -> str:
    """The API server and how it is reached: in-cluster, or the kubeconfig file and context."""
    if config.in_cluster or (config.in_cluster is None and config.kubeconfig is None and _in_pod()):
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "?")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return f"https://{host}:{port} (in-cluster service account)"
    if config.kubeconfig is not None:
        path = config.kubeconfig.expanduser()
    else:
        paths = [*filter(None, os.environ.get("KUBECONFIG", "").split(os.pathsep)), "~/.kube/config"]
        path = next(p for p in (Path(p).expanduser() for p in paths) if p.is_file())
    document = yaml.safe_load(path.read_text()) or {}
    wanted = config.context or document.get("current-context")
    context = next(
        (c.get("context") or {} for c in document.get("contexts") or [] if c.get("name") == wanted), None
    )
    if context is None:
        return f"context {wanted!r} not found in {path}"
    server = next(
        (
            (c.get("cluster") or {}).get("server", "?")
            for c in document.get("clusters") or []
            if c.get("name") == context.get("cluster")
        ),
        "?",
    )
    return f"{server} (context {wanted}, {path})"


def _covers(rule: Any, group: str, resource: str, verb: str) -> bool:
    """Whether a granted ResourceRule allows ``verb`` on every object of ``group/resource``."""
    if rule.resource_names:  # granted for some objects only
        return False
    return (
        bool({group, "*"} & set(rule.api_groups or ()))
        and bool({resource, "*"} & set(rule.resources or ()))
        and bool({verb, "*"} & set(rule.verbs or ()))
    )


def _permissions(rules: tuple[Mapping[str, Any], ...]) -> list[tuple[str, str, str]]:
    return sorted(
        {
            (g, r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
    )


def _named(group: str, resource: str, verb: str) -> str:
    return f"{verb} {resource}.{group}" if group else f"{verb} {resource}"


async def probe(api: Any, needs: glue.Needs) -> str | None:
    """Whether the API server is reachable, accepts the credentials and grants what the routes need:
    a SelfSubjectRulesReview in each namespace a Role covers, a SelfSubjectAccessReview for each
    permission needed in every namespace (a rules review answers for one namespace only). None, or
    why not: unreachable, the API server's refusal (401, 403), or the permissions it does not grant."""
    authorization = k8s.AuthorizationV1Api(api)
    timeout = request_timeout(api)
    missing: list[str] = []
    checks = list(needs.kubernetes) or [("default", ())]  # nothing needed: reachability and login only
    try:
        for namespace, rules in checks:
            if namespace is None:
                for group, resource, verb in _permissions(rules):
                    attributes = k8s.V1ResourceAttributes(group=group, resource=resource, verb=verb)
                    access = await authorization.create_self_subject_access_review(
                        k8s.V1SelfSubjectAccessReview(
                            spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                        ),
                        _request_timeout=timeout,
                    )
                    if not (access.status and access.status.allowed):
                        missing.append(f"{_named(group, resource, verb)} in every namespace")
                continue
            review = await authorization.create_self_subject_rules_review(
                k8s.V1SelfSubjectRulesReview(spec=k8s.V1SelfSubjectRulesReviewSpec(namespace=namespace)),
                _request_timeout=timeout,
            )
            granted = (review.status.resource_rules if review.status else None) or []
            for group, resource, verb in _permissions(rules):
                if not any(_covers(rule, group, resource, verb) for rule in granted):
                    missing.append(f"{_named(group, resource, verb)} in {namespace}")
    except ApiException as exc:
        return f"the API server answered {exc.status} {exc.reason}: {status_message(exc)}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
    if missing:
        return "not granted: " + ", ".join(missing)
    return None


@glue.client("kubernetes", config=KubernetesConfig, configured=_configured, describe=_describe, probe=probe)
@contextlib.asynccontextmanager
async def api_client(config: Any) -> AsyncIterator[Any]:
    """The shared kubernetes-asyncio ``ApiClient``, closed when the daemon stops."""
    settings = config if isinstance(config, KubernetesConfig) else KubernetesConfig.model_validate(config)
    configuration = k8s.Configuration()
    try:
        if settings.in_cluster or (settings.in_cluster is None and settings.kubeconfig is None and _in_pod()):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await k8s_config.load_kube_config(
                config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                context=settings.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as exc:
        raise glue.PermanentError(f"cannot load the Kubernetes client configuration: {exc}") from None
    api = k8s.ApiClient(configuration)
    api.user_agent = f"runtime-glue/{glue.__version__}"
    api.configuration.request_timeout = settings.request_timeout  # read by request_timeout(), below
    try:
        yield api
    finally:
        await api.close()


def _in_pod() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


#: How a dry-run plan says whether the API server checked it.
CHECKED = "checked by the API server with dryRun=All"
UNCHECKED = "not checked: no cluster configured"


async def client(ctx: glue.Context) -> Any:
    """The shared ApiClient; in dry-run, None when no cluster is configured (the plan is then unchecked)."""
    if ctx.dry_run and not ctx.clients.configured("kubernetes"):
        return None  # nothing to load: no kubeconfig lookup, no "Config not found" on stdout
    try:
        return await ctx.clients.get("kubernetes")
    except glue.PermanentError:
        if ctx.dry_run:
            return None
        raise


def request_timeout(api: Any, ctx: glue.Context | None = None) -> float:
    """Seconds one request may take: the client's bound, shortened to what is left of the attempt."""
    bound = float(getattr(api.configuration, "request_timeout", 30.0))
    if ctx is not None and ctx.deadline is not None:
        left = ctx.deadline - asyncio.get_running_loop().time()
        bound = min(bound, max(left, 0.1))
    return bound


# --------------------------------------------------------------------------------------------- params


class Params(glue.Params):
    """Base of the Kubernetes handlers' parameters: camelCase keys, like the rest of the settings."""

    model_config = pydantic.ConfigDict(alias_generator=to_camel)


class RestartParams(Params):
    """``kubernetes.restart``: which workload to restart."""

    kind: Literal["Deployment", "StatefulSet", "DaemonSet"] = "Deployment"
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    wait_for_target: bool = pydantic.Field(
        default=False, description="Retry (instead of dead-lettering) while the workload does not exist."
    )


# --------------------------------------------------------------------------------------------- errors


def status_message(exc: ApiException) -> str:
    """The API server's own explanation (``Status.message``), else the HTTP reason."""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(exc.reason or "no reason given")


def _retry_after(exc: ApiException) -> float | None:
    headers: Any = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    return glue.retry_after(str(value) if value else None)


def classify(
    exc: BaseException, what: str, *, wait_for_target: bool = False
) -> glue.TemporaryError | glue.PermanentError | None:
    """The handler error an API failure stands for, or None when it is not an API failure."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: {status_message(exc)}"
        if status == 0 and str(exc.reason or "").lstrip().startswith("Cannot prepare a request message"):
            # kubernetes-asyncio's REST client could not encode the body for its content type (30.1.0 and
            # apply-patch+yaml, say): nothing was sent, and sending again fails the same way.
            return glue.PermanentError(f"{what}: the client cannot send this request: {exc.reason}")
        if status == 404:
            if wait_for_target:
                return glue.TemporaryError(f"{message} (waiting for it to appear)")
            return glue.PermanentError(message)
        if status in (401, 408, 409, 429) or status >= 500 or status == 0:
            return glue.TemporaryError(f"{message} (HTTP {status})", delay=_retry_after(exc))
        return glue.PermanentError(f"{message} (HTTP {status})")
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return glue.TemporaryError(f"{what}: cannot reach the API server: {type(exc).__name__}: {exc}")
    return None


@contextlib.contextmanager
def errors(what: str, *, wait_for_target: bool = False) -> Iterator[None]:
    """Turn API failures raised inside the block into TemporaryError / PermanentError."""
    try:
        yield
    except (glue.TemporaryError, glue.PermanentError):
        raise
    except (ApiException, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        error = classify(exc, what, wait_for_target=wait_for_target)
        assert error is not None
        raise error from None
    except AttributeError as exc:
        # kubernetes-asyncio's ApiClient decodes the body of every ApiException; one its REST client raised
        # before sending (no body) becomes this AttributeError, with the ApiException as its context.
        if not isinstance(exc.__context__, ApiException):
            raise
        error = classify(exc.__context__, what, wait_for_target=wait_for_target)
        assert error is not None
        raise error from None


async def on_conflict(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``attempt`` (which reads, then writes with the resourceVersion it read) until no 409."""
    for _ in range(CONFLICT_ATTEMPTS - 1):
        try:
            return await attempt()
        except ApiException as exc:
            if exc.status != 409:
                raise
    try:
        return await attempt()
    except ApiException as exc:
        if exc.status == 409:
            raise glue.TemporaryError(
                f"{what}: still conflicting after {CONFLICT_ATTEMPTS} attempts: {status_message(exc)}"
            ) from None
        raise


# --------------------------------------------------------------------------------------------- events


def event_annotations(event: CloudEvent) -> dict[str, str]:
    """The annotations linking an object to the event that created or last changed it."""
    annotations = {ANNOTATION_EVENT_ID: event.get_id(), ANNOTATION_EVENT_SOURCE: event.get_source()}
    traceparent = event.get_extension("traceparent")
    if traceparent:
        annotations[ANNOTATION_TRACEPARENT] = str(traceparent)
    return annotations


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def key_hash(key: str, length: int = 16) -> str:
    """A short, stable, name-safe digest of an idempotency key or an event identity."""
    return hashlib.sha256(key.encode()).hexdigest()[:length]


def event_labels(ctx: glue.Context) -> dict[str, str]:
    """Labels that select the objects one invocation created (label values are at most 63 chars)."""
    labels = {LABEL_EVENT: key_hash(ctx.idempotency_key, 32)}
    if len(ctx.route) <= 63 and _LABEL_VALUE.match(ctx.route):
        labels[LABEL_ROUTE] = ctx.route
    return labels


def event_time(event: CloudEvent) -> str | None:
    """The event's ``time`` as RFC 3339 UTC with seconds (the format kubectl writes), if it has one."""
    when = event.get_time()
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a resource, for plans."""
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace is not None:
        root += f"/namespaces/{namespace}"
    root += f"/{plural}"
    return root + (f"/{name}" if name else "")


# --------------------------------------------------------------------------------------------- objects


@dataclasses.dataclass(frozen=True, slots=True)
class Resource:
    """A namespaced custom resource type."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def path(self, namespace: str, name: str | None = None) -> str:
        return path(self.group, self.version, self.plural, namespace, name)


def _timeout_kwargs(per_request: float | None) -> dict[str, Any]:
    return {"_request_timeout": per_request} if per_request is not None else {}


def write_options(
    *,
    content_type: str | None = None,
    dry_run: bool = False,
    per_request: float | None = None,
    field_manager: str | None = FIELD_MANAGER,
    force: bool | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a kubernetes-asyncio write: content type always explicit, dryRun=All."""
    options = _timeout_kwargs(per_request)
    if content_type is not None:
        options["_content_type"] = content_type
    if dry_run:
        options["dry_run"] = "All"
    if field_manager is not None:
        options["field_manager"] = field_manager
    if force is not None:
        options["force"] = force
    return options


async def read(
    api: Any, res: Resource, namespace: str, name: str, *, per_request: float | None = None
) -> Any:
    """The object as a dict, or None when it does not exist."""
    try:
        return await custom_objects(api).get_namespaced_custom_object(
            res.group, res.version, namespace, res.plural, name, **_timeout_kwargs(per_request)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def apply_call(res: Resource, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> glue.Call:
    """The plan entry of a server-side apply."""
    meta = obj["metadata"]
    return glue.Call(
        "PATCH",
        res.path(meta["namespace"], meta["name"]) + f"?fieldManager={field_manager}&force=true",
        body=dict(obj),
        note=f"{APPLY_PATCH}: server-side apply",
    )


async def server_side_apply(
    api: Any,
    res: Resource,
    obj: Mapping[str, Any],
    *,
    dry_run: bool = False,
    field_manager: str = FIELD_MANAGER,
    per_request: float | None = None,
) -> Any:
    """Create or update ``obj`` by server-side apply (idempotent: the same body changes nothing)."""
    meta = obj["metadata"]
    return await custom_objects(api).patch_namespaced_custom_object(
        res.group,
        res.version,
        meta["namespace"],
        res.plural,
        meta["name"],
        dict(obj),
        **write_options(
            content_type=APPLY_PATCH,
            dry_run=dry_run,
            per_request=per_request,
            field_manager=field_manager,
            force=True,
        ),
    )


def merge_patch_call(target: str, body: Mapping[str, Any], note: str) -> glue.Call:
    """The plan entry of a JSON merge patch of the object at REST path ``target``."""
    return glue.Call(
        "PATCH", f"{target}?fieldManager={FIELD_MANAGER}", body=dict(body), note=f"{MERGE_PATCH}: {note}"
    )


async def merge_patch(
    api: Any,
    res: Resource,
    namespace: str,
    name: str,
    patch: Mapping[str, Any],
    *,
    dry_run: bool = False,
    per_request: float | None = None,
) -> Any:
    """JSON merge patch of an object; with ``metadata.resourceVersion`` in ``patch``, a 409 if it moved on."""
    return await custom_objects(api).patch_namespaced_custom_object(
        res.group,
        res.version,
        namespace,
        res.plural,
        name,
        dict(patch),
        **write_options(content_type=MERGE_PATCH, dry_run=dry_run, per_request=per_request),
    )


def custom_objects(api: Any) -> Any:
    """kubernetes-asyncio's CustomObjectsApi on the shared client."""
    return k8s.CustomObjectsApi(api)


def core_v1(api: Any) -> Any:
    return k8s.CoreV1Api(api)


def networking_v1(api: Any) -> Any:
    return k8s.NetworkingV1Api(api)


def missing(res: Resource, name: str) -> ApiException:
    """The error the API server gives for an absent object, for code paths that found it absent."""
    return ApiException(status=404, reason=f'{res.plural}.{res.group} "{name}" not found')


async def delete(
    api: Any,
    res: Resource,
    namespace: str,
    name: str,
    *,
    dry_run: bool = False,
    per_request: float | None = None,
) -> bool:
    """Delete an object; False when it was already gone (a replayed removal is done, not an error)."""
    try:
        await custom_objects(api).delete_namespaced_custom_object(
            res.group,
            res.version,
            namespace,
            res.plural,
            name,
            **write_options(dry_run=dry_run, per_request=per_request, field_manager=None),
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def unchanged(before: Any, after: Any) -> bool:
    """Whether a write left the object as it was (the API server keeps resourceVersion on a no-op)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return False
    version = (before.get("metadata") or {}).get("resourceVersion")
    return version is not None and version == (after.get("metadata") or {}).get("resourceVersion")


def manifest(
    res: Resource,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    event: CloudEvent,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An object of ``res`` with ``spec``, its metadata linking it to ``event`` (and carrying ``labels``)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": event_annotations(event)}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": res.api_version, "kind": res.kind, "metadata": metadata, "spec": dict(spec)}


async def converge(
    ctx: glue.Context,
    res: Resource,
    namespace: str,
    name: str,
    obj: Mapping[str, Any] | None,
    *,
    log_as: str,
    delete_note: str = "",
) -> glue.Plan | None:
    """Make one object what ``obj`` says by server-side apply, or delete it when ``obj`` is None.

    Idempotent: applying the same object again changes nothing, and deleting what is already gone is done.
    In dry-run, returns the plan (checked with dryRun=All when a cluster is configured). Logs
    ``<log_as> applied``, ``<log_as> deleted`` or ``<log_as> already absent``.
    """
    what = f"{res.kind} {namespace}/{name}"
    api = await client(ctx)
    per_request = request_timeout(api, ctx) if api is not None else None

    if obj is None:
        call = glue.Call("DELETE", res.path(namespace, name), note=delete_note)
        if api is None:
            return glue.Plan([call], summary=f"delete {what} ({UNCHECKED})")
        with errors(what):
            deleted = await delete(api, res, namespace, name, dry_run=ctx.dry_run, per_request=per_request)
        if not deleted:
            ctx.log.info(f"{log_as} already absent", target=what)
            return glue.Plan([], summary=f"{what} is already absent") if ctx.dry_run else None
        if ctx.dry_run:
            return glue.Plan([call], summary=f"delete {what} ({CHECKED})")
        ctx.log.info(f"{log_as} deleted", target=what)
        return None

    call = apply_call(res, obj)
    if api is None:
        return glue.Plan([call], summary=f"apply {what} ({UNCHECKED})")
    with errors(what):
        before = await read(api, res, namespace, name, per_request=per_request)
        after = await server_side_apply(api, res, obj, dry_run=ctx.dry_run, per_request=per_request)
    changed = not unchanged(before, after)
    if ctx.dry_run:
        if not changed:
            return glue.Plan([], summary=f"{what} is already as wanted")
        return glue.Plan([call], summary=f"apply {what} ({CHECKED})")
    ctx.log.info(f"{log_as} applied", target=what, changed=changed, created=before is None)
    return None


# --------------------------------------------------------------------------------------------- restart

_WORKLOADS: dict[str, str] = {
    "deployment": "deployment",
    "deployments": "deployment",
    "statefulset": "stateful_set",
    "statefulsets": "stateful_set",
    "daemonset": "daemon_set",
    "daemonsets": "daemon_set",
}
_PLURALS = {"deployment": "deployments", "stateful_set": "statefulsets", "daemon_set": "daemonsets"}


@dataclasses.dataclass(frozen=True, slots=True)
class Restart:
    """The outcome of :func:`rollout_restart`: whether the pod template changed, and the call."""

    kind: str
    namespace: str
    name: str
    value: str
    changed: bool
    call: glue.Call


def _restart_request(
    kind: str,
    namespace: str,
    name: str,
    value: str,
    annotations: Mapping[str, str] | None,
    template_annotations: Mapping[str, str] | None,
    field_manager: str,
) -> tuple[str, dict[str, Any], glue.Call]:
    suffix = _WORKLOADS.get(kind.lower())
    if suffix is None:
        raise glue.PermanentError(f"cannot restart a {kind!r}: only Deployment, StatefulSet, DaemonSet")
    pod_annotations = {RESTARTED_AT: value, **(template_annotations or {})}
    body: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": pod_annotations}}}}
    if annotations:
        body["metadata"] = {"annotations": dict(annotations)}
    call = glue.Call(
        "PATCH",
        path("apps", "v1", _PLURALS[suffix], namespace, name) + f"?fieldManager={field_manager}",
        body=body,
        note=f"{STRATEGIC_MERGE_PATCH}: rollout restart",
    )
    return suffix, body, call


async def rollout_restart(
    api: Any,
    kind: str,
    namespace: str,
    name: str,
    value: str,
    *,
    key: str | None = None,
    annotations: Mapping[str, str] | None = None,
    template_annotations: Mapping[str, str] | None = None,
    dry_run: bool = False,
    wait_for_target: bool = False,
    field_manager: str = FIELD_MANAGER,
    per_request: float | None = None,
) -> Restart:
    """Restart a Deployment, StatefulSet or DaemonSet the way ``kubectl rollout restart`` does.

    Sets the pod-template annotation ``kubectl.kubernetes.io/restartedAt`` to ``value`` (plus
    ``template_annotations``) by strategic merge patch, and ``annotations`` on the workload itself.
    A workload whose pod template already carries the deciding annotations is left alone: nothing is sent
    and ``changed`` is False, so a replay does not roll the pods again. The deciding annotations are
    ``template_annotations`` (a secret version, say) plus, when ``key`` is given (the invocation's
    idempotency key), ``runtime-glue.io/restart-key`` recording it; without ``key``, also ``restartedAt``
    itself, which must then come from what caused the restart (never from the clock). A paused
    Deployment is refused, as kubectl does.

    ``api`` is the shared client (``await ctx.clients.get("kubernetes")``). With ``dry_run`` the patch
    is sent with ``dryRun=All`` (checked by the API server, not persisted). Raises
    :class:`glue.PermanentError` / :class:`glue.TemporaryError` as described in :func:`errors`; a
    missing workload is permanent unless ``wait_for_target``.
    """
    extra = dict(template_annotations or {})
    if key is not None:
        extra[ANNOTATION_RESTART_KEY] = key_hash(key)
    suffix, body, call = _restart_request(kind, namespace, name, value, annotations, extra, field_manager)
    decisive = dict(extra)  # the template annotations that decide whether this restart was done
    if key is None:
        decisive[RESTARTED_AT] = value
    apps = k8s.AppsV1Api(api)
    what = f"{kind} {namespace}/{name}"
    with errors(what, wait_for_target=wait_for_target):
        current = api.sanitize_for_serialization(
            await getattr(apps, f"read_namespaced_{suffix}")(name, namespace, **_timeout_kwargs(per_request))
        )
    spec = current.get("spec") or {}
    if spec.get("paused"):
        raise glue.PermanentError(f"{what}: can't restart paused deployment (run rollout resume first)")
    present = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if all(present.get(annotation) == wanted for annotation, wanted in decisive.items()):
        return Restart(kind, namespace, name, value, changed=False, call=call)
    with errors(what, wait_for_target=wait_for_target):
        await getattr(apps, f"patch_namespaced_{suffix}")(
            name,
            namespace,
            body,
            **write_options(
                content_type=STRATEGIC_MERGE_PATCH,
                dry_run=dry_run,
                per_request=per_request,
                field_manager=field_manager,
            ),
        )
    return Restart(kind, namespace, name, value, changed=True, call=call)


RESTART_RBAC = [
    glue.RbacRule(
        ("apps",),
        ("deployments", "statefulsets", "daemonsets"),
        ("get", "patch"),
        narrow_by=(
            "kind",
            "Deployment",
            (("Deployment", "deployments"), ("StatefulSet", "statefulsets"), ("DaemonSet", "daemonsets")),
        ),
    ),
]


@glue.handler("kubernetes.restart", params=RestartParams, rbac=RESTART_RBAC, clients=["kubernetes"])
async def restart(
    *, event: CloudEvent, params: RestartParams, ctx: glue.Context, **_: Any
) -> glue.Plan | None:
    """Rollout-restart a workload, once per event (restartedAt is the event time)."""
    value = event_time(event) or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = f"{params.kind} {params.namespace}/{params.name}"
    annotations = event_annotations(event)
    template_annotations = {ANNOTATION_RESTART_KEY: key_hash(ctx.idempotency_key)}
    api = await client(ctx)
    if api is None:
        plan_call = _restart_request(
            params.kind,
            params.namespace,
            params.name,
            value,
            annotations,
            template_annotations,
            FIELD_MANAGER,
        )[2]
        return glue.Plan([plan_call], summary=f"restart {what} ({UNCHECKED})")
    result = await rollout_restart(
        api,
        params.kind,
        params.namespace,
        params.name,
        value,
        key=ctx.idempotency_key,
        annotations=annotations,
        dry_run=ctx.dry_run,
        wait_for_target=params.wait_for_target,
        per_request=request_timeout(api, ctx),
    )
    if ctx.dry_run:
        if not result.changed:
            return glue.Plan([], summary=f"{what} is already restarted for this event: nothing to do")
        return glue.Plan([result.call], summary=f"restart {what} ({CHECKED})")
    ctx.log.info("rollout restart", target=what, changed=result.changed, restarted_at=value)
    return None
