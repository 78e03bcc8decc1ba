"""An Argo Server double: the REST submit endpoint over real HTTP.

Follows argo-workflows' pkg/apiclient/workflow/workflow.proto (``POST /api/v1/workflows/{namespace}/submit``
with ``resourceKind``, ``resourceName``, ``submitOptions``) and server/workflow/workflow_server.go
(SubmitWorkflow: kinds WorkflowTemplate / ClusterWorkflowTemplate / CronWorkflow, else InvalidArgument
"Resource kind '%s' is not supported for submitting"; ``serverDryRun`` creates nothing), docs/access-token.md
(``Authorization: Bearer``), as summarised in reference/actions.md section 5.2. Errors are grpc-gateway
JSON ``{"code": <gRPC code>, "message": ...}`` with the HTTP status grpc-gateway maps the code to.

The stop endpoint follows the same proto (``PUT /api/v1/workflows/{namespace}/{name}/stop``,
WorkflowStopRequest) and workflow_server.go StopWorkflow: util.StopWorkflow's error for a completed
Workflow ("cannot shutdown a completed workflow", workflow/util/util.go) comes back as gRPC Internal;
otherwise ``spec.shutdown`` becomes ``Stop``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

_KINDS = {
    "workflowtemplate": "WorkflowTemplate",
    "workflowtemplates": "WorkflowTemplate",
    "wftmpl": "WorkflowTemplate",
    "clusterworkflowtemplate": "ClusterWorkflowTemplate",
    "clusterworkflowtemplates": "ClusterWorkflowTemplate",
    "cwftmpl": "ClusterWorkflowTemplate",
    "cronworkflow": "CronWorkflow",
    "cronworkflows": "CronWorkflow",
    "cwf": "CronWorkflow",
}


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


@dataclasses.dataclass
class ArgoServerDouble:
    token: str
    templates: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (kind, namespace/name)
    workflows: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/workflows/{namespace}/submit", self.submit)
        app.router.add_put("/api/v1/workflows/{namespace}/{name}/stop", self.stop)
        return app

    async def stop(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body, "stop": True})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, 16, "token not valid for running mode")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        workflow = self.workflows.get((namespace, name))
        if workflow is None:
            return _error(404, 5, f'workflows.argoproj.io "{name}" not found')
        if (workflow.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Error"):
            message = f'cannot shutdown a completed workflow: workflow: "{name}", namespace: "{namespace}"'
            return _error(500, 13, message)
        workflow["spec"]["shutdown"] = "Stop"
        return web.json_response(workflow)

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, 16, "token not valid for running mode")
        namespace = request.match_info["namespace"]
        kind = _KINDS.get(str(body.get("resourceKind", "")).lower())
        if kind is None:
            return _error(
                400, 3, f"Resource kind '{body.get('resourceKind')}' is not supported for submitting"
            )
        name = body.get("resourceName", "")
        scope = name if kind == "ClusterWorkflowTemplate" else f"{namespace}/{name}"
        if (kind, scope) not in self.templates:
            plural = {
                "WorkflowTemplate": "workflowtemplates",
                "ClusterWorkflowTemplate": "clusterworkflowtemplates",
            }
            return _error(404, 5, f'{plural.get(kind, "cronworkflows")}.argoproj.io "{name}" not found')
        options = body.get("submitOptions") or {}
        wf_name = options.get("name")
        if wf_name and (namespace, wf_name) in self.workflows:
            return _error(409, 6, f'workflows.argoproj.io "{wf_name}" already exists')
        labels = dict(pair.split("=", 1) for pair in options.get("labels", "").split(",") if "=" in pair)
        workflow: dict[str, Any] = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": wf_name or f"{name}-x7k2p", "namespace": namespace, "labels": labels},
            "spec": {
                "workflowTemplateRef": {"name": name, "clusterScope": kind == "ClusterWorkflowTemplate"},
                "arguments": {
                    "parameters": [
                        {"name": p.split("=", 1)[0], "value": p.split("=", 1)[1]}
                        for p in options.get("parameters", [])
                    ]
                },
            },
        }
        if not options.get("serverDryRun"):
            self.workflows[namespace, workflow["metadata"]["name"]] = workflow
        return web.json_response(workflow)
