"""Argo Workflows: submit a Workflow from a WorkflowTemplate or ClusterWorkflowTemplate, once per event.

``argo.submit`` creates the Workflow the way Argo's own submit builds it (``workflowTemplateRef`` with
``clusterScope``, the ``workflows.argoproj.io/(cluster-)workflow-template`` label), with the event's
values as arguments. Its name is derived from the invocation's idempotency key, so a second delivery of
the same event finds it: 409 AlreadyExists is "already submitted", not an error (``generateName`` would
submit twice). Labels link the Workflow back to the event and the route; annotations carry the event
id, source and traceparent.

Two ways in, chosen by ``via``:

- ``kubernetes`` (default): ``POST .../namespaces/{ns}/workflows`` through the shared Kubernetes
  client; dry-run sends it with ``dryRun=All``. No Argo Server needed. A direct create skips what the
  Argo Server's submit does first (server/workflow/workflow_server.go, SubmitWorkflow: the instance-id
  label, then workflow/validate/validate.go ``Workflow`` with ``Submit``), so the handler does it: it
  reads the (Cluster)WorkflowTemplate (absent: permanent, unless ``waitForTarget``), refuses a template
  labelled for another controller instance (util/instanceid/service.go ``Validate``), refuses parameters
  the template does not declare, declared ones left without a value or ``valueFrom`` and values outside
  a parameter's ``enum`` (validateArgumentsValues), and a Workflow without an entrypoint; with
  ``instanceId`` it sets ``workflows.argoproj.io/controller-instanceid``, without which a controller
  run with an instance id ignores the Workflow. (The Argo Server itself keeps undeclared parameters;
  they are refused here because a misspelt one would otherwise leave its template default in force.)
- ``server``: the Argo Server's REST submit endpoint ``POST /api/v1/workflows/{ns}/submit`` with a
  bearer token (client ``argo-server``: url, token file or variable, CA); dry-run sets
  ``serverDryRun``. The server validates the template before creating the Workflow.

Its cancel step (a route's ``concurrencyGroup`` with ``onConflict: cancel``) stops the Workflow the
invocation submitted, as ``argo stop`` does: argo-workflows workflow/util/util.go ``StopWorkflow``
reads the Workflow, leaves one whose phase is completed (Succeeded, Failed, Error: "cannot shutdown a
completed workflow") and sets ``spec.shutdown: Stop`` by a JSON merge patch; the controller then stops
scheduling its steps and runs its exit handlers. ``via: server`` calls the Argo Server's
``PUT /api/v1/workflows/{ns}/{name}/stop``, which does the same. A Workflow that is gone, or was never
submitted, leaves nothing to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pydantic
from cloudevents.core.v1.event import CloudEvent
from pydantic.alias_generators import to_camel

import glue
from handlers import kubernetes

__all__ = [
    "LABEL_INSTANCE_ID",
    "WORKFLOW",
    "WORKFLOW_TEMPLATE",
    "ArgoServer",
    "ArgoServerConfig",
    "SubmitParams",
    "check_template",
    "stop",
    "submit",
    "workflow_name",
]

WORKFLOW = kubernetes.Resource("argoproj.io", "v1alpha1", "workflows", "Workflow")
WORKFLOW_TEMPLATE = kubernetes.Resource("argoproj.io", "v1alpha1", "workflowtemplates", "WorkflowTemplate")
CLUSTER_WORKFLOW_TEMPLATES = "clusterworkflowtemplates"
#: argo-workflows workflow/common/common.go LabelKeyControllerInstanceID.
LABEL_INSTANCE_ID = "workflows.argoproj.io/controller-instanceid"
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SubmitParams(kubernetes.Params):
    """``argo.submit``: which template, with which arguments."""

    namespace: str = pydantic.Field(min_length=1)
    template: str = pydantic.Field(min_length=1, max_length=253)
    cluster_scope: bool = pydantic.Field(
        default=False, description="The template is a ClusterWorkflowTemplate."
    )
    parameters: dict[str, str] = {}
    entrypoint: str | None = None
    service_account_name: str | None = None
    labels: dict[str, str] = {}
    name_prefix: str | None = pydantic.Field(
        default=None, max_length=46, pattern=_NAME, description="Default: the template name."
    )
    instance_id: str | None = pydantic.Field(
        default=None,
        max_length=63,
        pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
        description="The workflow controller's instanceID (its configmap), set as the "
        "workflows.argoproj.io/controller-instanceid label; the Argo Server sets its own.",
    )
    via: Literal["kubernetes", "server"] = "kubernetes"
    wait_for_target: bool = False


def workflow_name(prefix: str, key: str) -> str:
    """``<prefix>-<16 hex of the idempotency key>``, at most 63 characters, a valid object name."""
    stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:46].rstrip("-") or "workflow"
    return f"{stem}-{kubernetes.key_hash(key)}"


#: argo-workflows pkg/apis/workflow/v1alpha1 ``WorkflowStatus.Fulfilled``: phases a Workflow ends in.
COMPLETED_PHASES = frozenset({"Succeeded", "Failed", "Error"})

SUBMIT_RBAC = [
    glue.RbacRule(("argoproj.io",), ("workflows",), ("create", "get")),
    # the cancel step (argo stop): only routes whose concurrencyGroup cancels are granted it
    glue.RbacRule(("argoproj.io",), ("workflows",), ("get", "patch"), cancel_only=True),
    glue.RbacRule(("argoproj.io",), ("workflowtemplates",), ("get",)),
    glue.RbacRule(("argoproj.io",), (CLUSTER_WORKFLOW_TEMPLATES,), ("get",), cluster_scoped=True),
]


def _template_name(params: SubmitParams) -> str:
    kind = "ClusterWorkflowTemplate" if params.cluster_scope else "WorkflowTemplate"
    return (
        f"{kind} {params.template}"
        if params.cluster_scope
        else f"{kind} {params.namespace}/{params.template}"
    )


async def _read_template(api: Any, params: SubmitParams, per_request: float) -> dict[str, Any]:
    """The (Cluster)WorkflowTemplate; a missing one is the ApiException 404 (see kubernetes.errors)."""
    custom = kubernetes.custom_objects(api)
    group, version = WORKFLOW_TEMPLATE.group, WORKFLOW_TEMPLATE.version
    if params.cluster_scope:
        found: dict[str, Any] = await custom.get_cluster_custom_object(
            group, version, CLUSTER_WORKFLOW_TEMPLATES, params.template, _request_timeout=per_request
        )
    else:
        found = await custom.get_namespaced_custom_object(
            group,
            version,
            params.namespace,
            WORKFLOW_TEMPLATE.plural,
            params.template,
            _request_timeout=per_request,
        )
    return found


def check_template(template: dict[str, Any], params: SubmitParams) -> None:
    """Refuse what the Argo Server's submit would refuse (and undeclared parameters), naming them."""
    what = _template_name(params)
    labels = (template.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_INSTANCE_ID) != params.instance_id:
        theirs = labels.get(LABEL_INSTANCE_ID)
        raise glue.PermanentError(
            f"{what} is labelled for controller instance {theirs!r}, the route submits for "
            f"{params.instance_id!r} (instanceId): that controller would not run it"
        )
    spec = template.get("spec") or {}
    declared = {
        str(p.get("name")): p for p in (spec.get("arguments") or {}).get("parameters") or [] if p.get("name")
    }
    problems: list[str] = []
    unknown = sorted(set(params.parameters) - set(declared))
    if unknown:
        problems.append(f"parameters not declared by the template: {', '.join(unknown)}")
    missing = sorted(
        name
        for name, p in declared.items()
        if name not in params.parameters and p.get("value") is None and p.get("valueFrom") is None
    )
    if missing:
        problems.append(f"parameters without a value: {', '.join(missing)}")
    for name, p in declared.items():
        enum = p.get("enum")
        value = params.parameters.get(name, p.get("value"))
        if enum and value is not None and str(value) not in [str(v) for v in enum]:
            problems.append(f"parameter {name}={value!r} is not one of its enum {list(enum)}")
    entrypoint = params.entrypoint or spec.get("entrypoint")
    if not entrypoint:
        problems.append("spec.entrypoint is required (the template has none; set entrypoint)")
    elif params.entrypoint and spec.get("templates") is not None:
        names = {t.get("name") for t in spec.get("templates") or []}
        if params.entrypoint not in names:
            problems.append(f"entrypoint {params.entrypoint!r} is not a template of it")
    if problems:
        raise glue.PermanentError(f"cannot submit from {what}: " + "; ".join(problems))


async def stop(*, event: CloudEvent, params: SubmitParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Stop the Workflow this invocation submitted, as argo stop does (argo.submit's cancel step)."""
    name = workflow_name(params.name_prefix or params.template, ctx.idempotency_key)
    what = f"Workflow {params.namespace}/{name}"
    patch = {"spec": {"shutdown": "Stop"}}
    call = kubernetes.merge_patch_call(WORKFLOW.path(params.namespace, name), patch, "stop (argo stop)")
    if params.via == "server":
        return await _stop_via_server(params, ctx, name, what)
    api = await kubernetes.client(ctx)
    if api is None:
        return glue.Plan([call], summary=f"stop {what} ({kubernetes.UNCHECKED})")
    per_request = kubernetes.request_timeout(api, ctx)
    with kubernetes.errors(what):
        existing = await kubernetes.read(api, WORKFLOW, params.namespace, name, per_request=per_request)
        if existing is None:
            ctx.log.info("nothing to stop: no workflow", target=what)
            return glue.Plan([], summary=f"{what} does not exist: nothing to stop") if ctx.dry_run else None
        mine = (existing["metadata"].get("labels") or {}).get(kubernetes.LABEL_EVENT)
        if mine != kubernetes.event_labels(ctx)[kubernetes.LABEL_EVENT]:
            raise glue.PermanentError(f"{what}: the name is taken by a Workflow of another event")
        phase = (existing.get("status") or {}).get("phase")
        if phase in COMPLETED_PHASES:
            ctx.log.info("nothing to stop: workflow completed", target=what, phase=phase)
            return (
                glue.Plan([], summary=f"{what} completed ({phase}): nothing to stop") if ctx.dry_run else None
            )
        if (existing.get("spec") or {}).get("shutdown") == "Stop":
            return glue.Plan([], summary=f"{what} is stopping already") if ctx.dry_run else None
        await kubernetes.merge_patch(
            api, WORKFLOW, params.namespace, name, patch, dry_run=ctx.dry_run, per_request=per_request
        )
    if ctx.dry_run:
        return glue.Plan([call], summary=f"stop {what} ({kubernetes.CHECKED})")
    ctx.log.info("workflow stopped", target=what)
    return None


@glue.handler(
    "argo.submit",
    params=SubmitParams,
    rbac=SUBMIT_RBAC,
    clients=["kubernetes", "argo-server"],
    cancel=stop,
)
async def submit(*, event: CloudEvent, params: SubmitParams, ctx: glue.Context, **_: Any) -> glue.Plan | None:
    """Submit an Argo Workflow from a (Cluster)WorkflowTemplate, once per event."""
    name = workflow_name(params.name_prefix or params.template, ctx.idempotency_key)
    template_label = (
        "workflows.argoproj.io/cluster-workflow-template"
        if params.cluster_scope
        else "workflows.argoproj.io/workflow-template"
    )
    labels = {**params.labels, template_label: params.template, **kubernetes.event_labels(ctx)}
    if params.instance_id and params.via == "kubernetes":
        labels[LABEL_INSTANCE_ID] = params.instance_id
    annotations = kubernetes.event_annotations(event)
    what = f"Workflow {params.namespace}/{name}"
    if params.via == "server":
        return await _submit_via_server(params, ctx, name, labels, annotations, what)

    spec: dict[str, Any] = {
        "workflowTemplateRef": {"name": params.template, "clusterScope": params.cluster_scope}
    }
    if params.parameters:
        spec["arguments"] = {"parameters": [{"name": k, "value": v} for k, v in params.parameters.items()]}
    if params.entrypoint:
        spec["entrypoint"] = params.entrypoint
    if params.service_account_name:
        spec["serviceAccountName"] = params.service_account_name
    body = {
        "apiVersion": WORKFLOW.api_version,
        "kind": WORKFLOW.kind,
        "metadata": {
            "name": name,
            "namespace": params.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
    call = glue.Call(
        "POST", WORKFLOW.path(params.namespace), body=body, note="409 AlreadyExists: already submitted"
    )
    api = await kubernetes.client(ctx)
    if api is None:
        return glue.Plan([call], summary=f"submit {what} ({kubernetes.UNCHECKED})")
    per_request = kubernetes.request_timeout(api, ctx)
    custom = kubernetes.custom_objects(api)
    mine = kubernetes.LABEL_EVENT

    def submitted(existing: dict[str, Any] | None) -> bool:
        """Whether the Workflow of this name is this event's (a different one's is permanent)."""
        if existing is None:
            return False
        if (existing["metadata"].get("labels") or {}).get(mine) != labels[mine]:
            raise glue.PermanentError(f"{what}: the name is taken by a Workflow of another event")
        ctx.log.info("workflow already submitted", target=what)
        return True

    already = glue.Plan([], summary=f"{what} was already submitted") if ctx.dry_run else None
    with kubernetes.errors(what):
        # First, so that a redelivery is done even if the template changed or went since.
        if submitted(await kubernetes.read(api, WORKFLOW, params.namespace, name, per_request=per_request)):
            return already
    with kubernetes.errors(_template_name(params), wait_for_target=params.wait_for_target):
        template = await _read_template(api, params, per_request)
    check_template(template, params)
    with kubernetes.errors(what, wait_for_target=params.wait_for_target):
        try:
            await custom.create_namespaced_custom_object(
                WORKFLOW.group,
                WORKFLOW.version,
                params.namespace,
                WORKFLOW.plural,
                body,
                **kubernetes.write_options(
                    dry_run=ctx.dry_run, per_request=per_request, field_manager=kubernetes.FIELD_MANAGER
                ),
            )
        except kubernetes.ApiException as exc:
            if exc.status != 409:
                raise
            existing = await kubernetes.read(api, WORKFLOW, params.namespace, name, per_request=per_request)
            if submitted(existing):
                return already
            raise
    if ctx.dry_run:
        return glue.Plan([call], summary=f"submit {what} ({kubernetes.CHECKED})")
    ctx.log.info("workflow submitted", target=what, template=params.template)
    return None


# --------------------------------------------------------------------------------------------- server


class ArgoServerConfig(pydantic.BaseModel):
    """``clients.argo-server``: the Argo Server's REST API (only for routes with ``via: server``)."""

    model_config = pydantic.ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    url: str | None = pydantic.Field(
        default=None, pattern=r"^https?://", description="e.g. https://argo-server.argo:2746"
    )
    token_file: Path | None = pydantic.Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Bearer token, re-read on every request (projected tokens rotate).",
    )
    token_env: str | None = pydantic.Field(
        default=None, description="Environment variable holding the token."
    )
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    request_timeout: float = pydantic.Field(default=30.0, gt=0)


class ArgoServer:
    """A thin client of ``POST /api/v1/workflows/{namespace}/submit``."""

    def __init__(self, config: ArgoServerConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session

    def _token(self) -> str:
        if self.config.token_env:
            token = os.environ.get(self.config.token_env, "")
            if not token:
                raise glue.PermanentError(
                    f"argo-server: environment variable {self.config.token_env} is empty"
                )
            return token
        assert self.config.token_file is not None
        try:
            return self.config.token_file.read_text().strip()
        except OSError as exc:
            raise glue.PermanentError(f"argo-server: cannot read the token file: {exc.strerror}") from None

    async def stop(self, namespace: str, name: str, what: str) -> bool:
        """``PUT /api/v1/workflows/{namespace}/{name}/stop``; False when there is nothing to stop (the
        Workflow is gone, or completed: the server's "cannot shutdown a completed workflow")."""
        assert self.config.url is not None
        url = f"{self.config.url.rstrip('/')}/api/v1/workflows/{namespace}/{name}/stop"
        status, message = await self._send("PUT", url, {"name": name, "namespace": namespace}, what)
        if status < 300:
            return True
        if status == 404 or "completed workflow" in message:
            return False
        raise glue.PermanentError(f"{what}: {message} (HTTP {status})")

    async def _send(self, method: str, url: str, body: dict[str, Any], what: str) -> tuple[int, str]:
        """One request: (status, the error message or body); temporary failures raise TemporaryError."""
        headers = {"Authorization": f"Bearer {self._token()}"}
        try:
            async with self.session.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
            ) as response:
                text = await response.text()
                message = _grpc_message(text) or response.reason or "no reason given"
                if response.status in (401, 429) or (
                    response.status >= 500 and "completed workflow" not in message
                ):
                    delay = glue.retry_after(response.headers.get("Retry-After"))
                    raise glue.TemporaryError(f"{what}: {message} (HTTP {response.status})", delay=delay)
                return response.status, message
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise glue.TemporaryError(f"{what}: cannot reach the Argo Server: {type(exc).__name__}") from None

    async def submit(self, namespace: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
        """The created Workflow, or None when one of that name exists (409 / gRPC AlreadyExists)."""
        assert self.config.url is not None
        url = f"{self.config.url.rstrip('/')}/api/v1/workflows/{namespace}/submit"
        headers = {"Authorization": f"Bearer {self._token()}"}
        try:
            async with self.session.post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
            ) as response:
                text = await response.text()
                if response.status < 300:
                    result: dict[str, Any] = await response.json(content_type=None)
                    return result
                message = _grpc_message(text) or response.reason or "no reason given"
                if response.status == 409:
                    return None
                if response.status in (401, 429) or response.status >= 500:
                    delay = glue.retry_after(response.headers.get("Retry-After"))
                    raise glue.TemporaryError(f"{what}: {message} (HTTP {response.status})", delay=delay)
                raise glue.PermanentError(f"{what}: {message} (HTTP {response.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise glue.TemporaryError(f"{what}: cannot reach the Argo Server: {type(exc).__name__}") from None


def _grpc_message(text: str) -> str:
    """grpc-gateway errors are ``{"code": N, "message": "..."}``."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _describe(config: ArgoServerConfig) -> str:
    return config.url or "no url (only routes with via: server use it)"


@glue.client("argo-server", config=ArgoServerConfig, describe=_describe)
@contextlib.asynccontextmanager
async def argo_server(config: Any) -> AsyncIterator[ArgoServer]:
    settings = config if isinstance(config, ArgoServerConfig) else ArgoServerConfig.model_validate(config)
    if settings.url is None:
        raise glue.PermanentError("argo.submit via server needs clients.argo-server.url")
    tls: ssl.SSLContext | bool = True
    if settings.insecure_skip_verify:
        tls = False
    elif settings.ca_file is not None:
        tls = ssl.create_default_context(cafile=str(settings.ca_file))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls), headers={"User-Agent": f"runtime-glue/{glue.__version__}"}
    ) as session:
        yield ArgoServer(settings, session)


def _pairs(values: dict[str, str]) -> str:
    """Argo's ``k=v,k2=v2`` form; pairs whose value would break it are left out."""
    return ",".join(f"{k}={v}" for k, v in values.items() if "," not in v and "=" not in v)


async def _stop_via_server(params: SubmitParams, ctx: glue.Context, name: str, what: str) -> glue.Plan | None:
    call = glue.Call(
        "PUT",
        f"/api/v1/workflows/{params.namespace}/{name}/stop",
        body={"name": name, "namespace": params.namespace},
        note="Argo Server: argo stop",
    )
    if ctx.dry_run:
        return glue.Plan([call], summary=f"stop {what} via the Argo Server")
    server: ArgoServer = await ctx.clients.get("argo-server")
    if await server.stop(params.namespace, name, what):
        ctx.log.info("workflow stopped", target=what, via="server")
    else:
        ctx.log.info("nothing to stop: workflow gone or completed", target=what, via="server")
    return None


async def _submit_via_server(
    params: SubmitParams,
    ctx: glue.Context,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    what: str,
) -> glue.Plan | None:
    options: dict[str, Any] = {
        "name": name,
        "parameters": [f"{k}={v}" for k, v in params.parameters.items()],
        "labels": _pairs(labels),
        "annotations": _pairs(annotations),
        "serverDryRun": ctx.dry_run,
    }
    if params.entrypoint:
        options["entryPoint"] = params.entrypoint
    if params.service_account_name:
        options["serviceAccount"] = params.service_account_name
    body = {
        "namespace": params.namespace,
        "resourceKind": "ClusterWorkflowTemplate" if params.cluster_scope else "WorkflowTemplate",
        "resourceName": params.template,
        "submitOptions": options,
    }
    call = glue.Call("POST", f"/api/v1/workflows/{params.namespace}/submit", body=body, note="Argo Server")
    try:
        server: ArgoServer = await ctx.clients.get("argo-server")
    except glue.PermanentError:
        if ctx.dry_run:
            return glue.Plan(
                [call], summary=f"submit {what} via the Argo Server (not checked: no server configured)"
            )
        raise
    created = await server.submit(params.namespace, body, what)
    if created is None:
        ctx.log.info("workflow already submitted", target=what, via="server")
        return glue.Plan([], summary=f"{what} was already submitted") if ctx.dry_run else None
    if ctx.dry_run:
        return glue.Plan([call], summary=f"submit {what} via the Argo Server (checked with serverDryRun)")
    ctx.log.info("workflow submitted", target=what, template=params.template, via="server")
    return None
