"""argo.submit through the Kubernetes API (the API double, apiserver.py) and through the Argo Server
(the REST double, argo_server.py).

The Workflow shape follows argo-workflows' workflow/common/convert.go (workflowTemplateRef, template
label), as summarised in reference/actions.md section 5.1. What is refused before a direct create follows
what the Argo Server's submit does first (server/workflow/workflow_server.go SubmitWorkflow,
util/instanceid/service.go, workflow/validate/validate.go validateArgumentsValues). The cancel step
(``argo.stop``) follows ``argo stop``: workflow/util/util.go StopWorkflow and patchShutdownStrategy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from aiohttp import test_utils
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import argo, kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.argo_server import ArgoServerDouble
from tests.handlers.kubernetes.conftest import (
    CLUSTER_WORKFLOW_TEMPLATES,
    WORKFLOW_TEMPLATES,
    WORKFLOWS,
    MakeContext,
    make_event,
    workflow_template,
)

NS = "ci"


def params(**overrides: Any) -> argo.SubmitParams:
    values: dict[str, Any] = {
        "namespace": NS,
        "template": "build-release",
        "parameters": {"tag": "v1.4.0", "project": "group/app"},
    }
    values.update(overrides)
    return argo.SubmitParams.model_validate(values)


TEMPLATE_PARAMETERS: list[dict[str, Any]] = [
    {"name": "tag"},
    {"name": "project"},
    {"name": "channel", "value": "stable", "enum": ["stable", "beta"]},
]


@pytest.fixture(autouse=True)
def templates(apiserver: ApiServer) -> None:
    apiserver.seed(WORKFLOW_TEMPLATES, workflow_template(parameters=TEMPLATE_PARAMETERS))
    apiserver.seed(
        CLUSTER_WORKFLOW_TEMPLATES, workflow_template(namespace=None, parameters=TEMPLATE_PARAMETERS)
    )


def workflows(apiserver: ApiServer) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (res, namespace, _), obj in apiserver.objects.items()
        if str(res.plural) == "workflows" and namespace == NS and not obj.deleted
    ]


async def test_submit_creates_one_workflow_from_the_template(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await argo.submit(event=event, params=params(), ctx=make_ctx("gitlab evt-1 release"))

    [wf] = workflows(apiserver)
    assert wf["metadata"]["name"] == argo.workflow_name("build-release", "gitlab evt-1 release")
    assert wf["spec"]["workflowTemplateRef"] == {"name": "build-release", "clusterScope": False}
    assert wf["spec"]["arguments"]["parameters"] == [
        {"name": "tag", "value": "v1.4.0"},
        {"name": "project", "value": "group/app"},
    ]
    labels = wf["metadata"]["labels"]
    assert labels["workflows.argoproj.io/workflow-template"] == "build-release"
    assert labels[kubernetes.LABEL_EVENT] == kubernetes.key_hash("gitlab evt-1 release", 32)
    assert labels[kubernetes.LABEL_ROUTE] == "test-route"
    assert wf["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert apiserver.writes[-1]["method"] == "POST"


async def test_second_delivery_submits_nothing_more(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await argo.submit(event=event, params=params(), ctx=make_ctx("k"))
    assert await argo.submit(event=event, params=params(), ctx=make_ctx("k", attempt=2)) is None
    plan = await argo.submit(event=event, params=params(), ctx=make_ctx("k", dry_run=True))

    assert len(workflows(apiserver)) == 1
    assert plan is not None and plan.calls == [] and "already submitted" in plan.summary


async def test_another_event_is_another_workflow(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await argo.submit(event=event, params=params(), ctx=make_ctx("k1"))
    await argo.submit(event=make_event(id="evt-2"), params=params(), ctx=make_ctx("k2"))
    assert len(workflows(apiserver)) == 2


async def test_cluster_template_and_options(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    p = params(cluster_scope=True, entrypoint="main", service_account_name="ci-runner", name_prefix="release")
    await argo.submit(event=event, params=p, ctx=make_ctx())
    [wf] = workflows(apiserver)
    assert wf["metadata"]["name"].startswith("release-")
    assert wf["spec"]["workflowTemplateRef"]["clusterScope"] is True
    assert wf["metadata"]["labels"]["workflows.argoproj.io/cluster-workflow-template"] == "build-release"
    assert (wf["spec"]["entrypoint"], wf["spec"]["serviceAccountName"]) == ("main", "ci-runner")


def test_workflow_names_are_valid_and_bounded() -> None:
    name = argo.workflow_name("A_Very.Long Template Name " * 5, "key")
    assert len(name) <= 63
    assert name == name.lower() and name[0].isalnum() and name[-1].isalnum()
    assert argo.workflow_name("x", "key") == argo.workflow_name("x", "key") != argo.workflow_name("x", "key2")


async def test_dry_run_is_checked_and_creates_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    plan = await argo.submit(event=event, params=params(), ctx=make_ctx(dry_run=True))
    assert plan is not None and [c.method for c in plan.calls] == ["POST"]
    assert apiserver.writes[-1]["query"]["dryRun"] == "All"
    assert workflows(apiserver) == []


async def test_a_name_taken_by_another_event_is_permanent(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(
        WORKFLOWS,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": argo.workflow_name("build-release", "k"), "namespace": NS},
            "spec": {},
        },
    )
    with pytest.raises(glue.PermanentError, match="taken by a Workflow of another event"):
        await argo.submit(event=event, params=params(), ctx=make_ctx("k"))


async def test_a_missing_template_is_refused_before_creating(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    with pytest.raises(glue.PermanentError, match=r"WorkflowTemplate ci/nope.*not found"):
        await argo.submit(event=event, params=params(template="nope"), ctx=make_ctx())
    with pytest.raises(glue.TemporaryError, match="waiting for it to appear"):
        await argo.submit(event=event, params=params(template="nope", wait_for_target=True), ctx=make_ctx())
    with pytest.raises(glue.PermanentError, match=r"ClusterWorkflowTemplate nope.*not found"):
        await argo.submit(event=event, params=params(template="nope", cluster_scope=True), ctx=make_ctx())
    assert workflows(apiserver) == [] and apiserver.writes == []


@pytest.mark.parametrize(
    ("parameters", "refusal"),
    [
        ({"tag": "v1", "project": "a", "tga": "v1"}, "parameters not declared by the template: tga"),
        ({"tag": "v1"}, "parameters without a value: project"),
        ({"tag": "v1", "project": "a", "channel": "nightly"}, "channel='nightly' is not one of its enum"),
    ],
)
async def test_parameters_are_checked_against_the_template(
    apiserver: ApiServer,
    make_ctx: MakeContext,
    event: CloudEvent,
    parameters: dict[str, str],
    refusal: str,
) -> None:
    for cluster_scope in (False, True):
        p = params(parameters=parameters, cluster_scope=cluster_scope)
        with pytest.raises(glue.PermanentError, match=refusal):
            await argo.submit(event=event, params=p, ctx=make_ctx())
        with pytest.raises(glue.PermanentError, match=refusal):
            await argo.submit(event=event, params=p, ctx=make_ctx(dry_run=True))
    assert workflows(apiserver) == [] and apiserver.writes == []


async def test_an_entrypoint_is_needed(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    apiserver.seed(WORKFLOW_TEMPLATES, workflow_template("bare", entrypoint=None))
    with pytest.raises(glue.PermanentError, match=r"spec\.entrypoint is required"):
        await argo.submit(event=event, params=params(template="bare", parameters={}), ctx=make_ctx())
    with pytest.raises(glue.PermanentError, match="'build' is not a template of it"):
        await argo.submit(
            event=event, params=params(template="bare", parameters={}, entrypoint="build"), ctx=make_ctx()
        )
    await argo.submit(
        event=event, params=params(template="bare", parameters={}, entrypoint="main"), ctx=make_ctx()
    )
    assert len(workflows(apiserver)) == 1


async def test_instance_id_label_for_a_controller_with_an_instance_id(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    labelled = {argo.LABEL_INSTANCE_ID: "team-a"}
    apiserver.seed(WORKFLOW_TEMPLATES, workflow_template("team-a-build", labels=labelled))

    await argo.submit(
        event=event,
        params=params(template="team-a-build", parameters={}, instance_id="team-a"),
        ctx=make_ctx(),
    )
    [wf] = workflows(apiserver)
    assert wf["metadata"]["labels"][argo.LABEL_INSTANCE_ID] == "team-a"

    with pytest.raises(glue.PermanentError, match="labelled for controller instance 'team-a'"):
        await argo.submit(
            event=event, params=params(template="team-a-build", parameters={}), ctx=make_ctx("k2")
        )
    with pytest.raises(glue.PermanentError, match="labelled for controller instance None"):
        await argo.submit(event=event, params=params(instance_id="team-a"), ctx=make_ctx("k3"))


async def test_a_redelivery_is_done_even_if_the_template_went_since(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    await argo.submit(event=event, params=params(), ctx=make_ctx("k"))
    apiserver.objects[kmock.resource(WORKFLOW_TEMPLATES), NS, "build-release"].delete()
    assert await argo.submit(event=event, params=params(), ctx=make_ctx("k", attempt=2)) is None
    assert len(workflows(apiserver)) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (422, glue.PermanentError),
        (403, glue.PermanentError),
        (429, glue.TemporaryError),
        (500, glue.TemporaryError),
    ],
)
async def test_errors(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent, status: int, error: type[Exception]
) -> None:
    apiserver.fail("POST", "/workflows$", status, message="from the API server")
    with pytest.raises(error, match="from the API server"):
        await argo.submit(event=event, params=params(), ctx=make_ctx())


# ------------------------------------------------------------------------------------- cancel step


async def test_cancel_step_stops_the_running_workflow_as_argo_stop_does(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    ctx = make_ctx("gitlab evt-1 release")
    await argo.submit(event=event, params=params(), ctx=ctx)
    [wf] = workflows(apiserver)
    name = wf["metadata"]["name"]
    apiserver.set_status(WORKFLOWS, NS, name, {"phase": "Running"})

    plan = await argo.stop(event=event, params=params(), ctx=make_ctx("gitlab evt-1 release", dry_run=True))
    assert plan is not None and [c.method for c in plan.calls] == ["PATCH"]
    assert plan.calls[0].body == {"spec": {"shutdown": "Stop"}}
    assert "shutdown" not in apiserver.read(WORKFLOWS, NS, name)["spec"], "dry-run changes nothing"

    await argo.stop(event=event, params=params(), ctx=ctx)
    assert apiserver.read(WORKFLOWS, NS, name)["spec"]["shutdown"] == "Stop"
    versions = apiserver.versions(WORKFLOWS, NS, name)
    await argo.stop(event=event, params=params(), ctx=ctx)  # a redelivered cancel step
    assert apiserver.versions(WORKFLOWS, NS, name) == versions


async def test_cancel_step_leaves_a_completed_or_missing_workflow_alone(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    ctx = make_ctx("gitlab evt-2 release")
    assert await argo.stop(event=event, params=params(), ctx=ctx) is None  # never submitted
    await argo.submit(event=event, params=params(), ctx=ctx)
    [wf] = workflows(apiserver)
    name = wf["metadata"]["name"]
    apiserver.set_status(WORKFLOWS, NS, name, {"phase": "Succeeded"})
    versions = apiserver.versions(WORKFLOWS, NS, name)
    await argo.stop(event=event, params=params(), ctx=ctx)
    assert apiserver.versions(WORKFLOWS, NS, name) == versions
    assert "shutdown" not in apiserver.read(WORKFLOWS, NS, name)["spec"]


async def test_the_handler_declares_its_cancel_step_and_the_patch_it_needs() -> None:
    handler = glue.registry.get("argo.submit")
    assert handler.cancel is argo.stop
    [patch] = [rule for rule in handler.rbac if "patch" in rule.verbs]
    assert patch.resources == ("workflows",) and patch.cancel_only, "granted to cancelling routes only"


# --------------------------------------------------------------------------------------------- server


@pytest.fixture
async def argo_server(tmp_path: Path) -> AsyncIterator[tuple[ArgoServerDouble, glue.Clients]]:
    double = ArgoServerDouble(token="sa-token-123")
    double.templates.add(("WorkflowTemplate", f"{NS}/build-release"))
    server = test_utils.TestServer(double.app(), host="127.0.0.1")
    await server.start_server()
    token = tmp_path / "token"
    token.write_text("sa-token-123\n")
    clients = glue.Clients(
        glue.registry, {"argo-server": {"url": str(server.make_url("")).rstrip("/"), "tokenFile": str(token)}}
    )
    try:
        async with clients.opened():
            yield double, clients
    finally:
        await server.close()


async def test_submit_via_the_argo_server_once(
    argo_server: tuple[ArgoServerDouble, glue.Clients], make_ctx: MakeContext, event: CloudEvent
) -> None:
    double, clients = argo_server
    p = params(via="server")

    await argo.submit(event=event, params=p, ctx=make_ctx("k", clients=clients))
    await argo.submit(event=event, params=p, ctx=make_ctx("k", clients=clients, attempt=2))

    assert list(double.workflows) == [(NS, argo.workflow_name("build-release", "k"))]
    sent = double.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer sa-token-123"
    options = sent["body"]["submitOptions"]
    assert sent["body"]["resourceKind"] == "WorkflowTemplate"
    assert options["parameters"] == ["tag=v1.4.0", "project=group/app"]
    assert f"{kubernetes.LABEL_EVENT}=" in options["labels"]


async def test_server_dry_run_and_errors(
    argo_server: tuple[ArgoServerDouble, glue.Clients],
    make_ctx: MakeContext,
    event: CloudEvent,
    tmp_path: Path,
) -> None:
    double, clients = argo_server
    plan = await argo.submit(
        event=event, params=params(via="server"), ctx=make_ctx(clients=clients, dry_run=True)
    )
    assert plan is not None and len(plan.calls) == 1 and "serverDryRun" in plan.summary
    assert double.workflows == {} and double.requests[-1]["body"]["submitOptions"]["serverDryRun"] is True

    with pytest.raises(glue.PermanentError, match=r'workflowtemplates\.argoproj\.io "missing" not found'):
        await argo.submit(
            event=event, params=params(via="server", template="missing"), ctx=make_ctx(clients=clients)
        )

    (tmp_path / "token").write_text("rotated-elsewhere")
    with pytest.raises(glue.TemporaryError, match="token not valid") as raised:
        await argo.submit(event=event, params=params(via="server"), ctx=make_ctx(clients=clients))
    assert "rotated-elsewhere" not in str(raised.value)


async def test_cancel_step_via_the_argo_server(
    argo_server: tuple[ArgoServerDouble, glue.Clients], make_ctx: MakeContext, event: CloudEvent
) -> None:
    double, clients = argo_server
    p = params(via="server")
    await argo.submit(event=event, params=p, ctx=make_ctx("k", clients=clients))
    name = argo.workflow_name("build-release", "k")
    await argo.stop(event=event, params=p, ctx=make_ctx("k", clients=clients))
    assert double.workflows[NS, name]["spec"]["shutdown"] == "Stop"
    assert double.requests[-1]["body"] == {"name": name, "namespace": NS}

    double.workflows[NS, name]["status"] = {"phase": "Failed"}
    await argo.stop(event=event, params=p, ctx=make_ctx("k", clients=clients))  # completed: nothing to do
    await argo.stop(event=event, params=p, ctx=make_ctx("gone", clients=clients))  # never submitted


async def test_server_not_configured(make_ctx: MakeContext, event: CloudEvent) -> None:
    bare = glue.Clients(glue.registry, {})
    plan = await argo.submit(
        event=event, params=params(via="server"), ctx=make_ctx(clients=bare, dry_run=True)
    )
    assert plan is not None and "not checked" in plan.summary
    with pytest.raises(glue.PermanentError, match=r"needs clients\.argo-server\.url"):
        await argo.submit(event=event, params=params(via="server"), ctx=make_ctx(clients=bare))
