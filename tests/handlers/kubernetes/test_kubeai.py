"""kubeai.reload against the API double (apiserver.py).

The Model shape and what rolls its pods follow kubeai's api/k8s/v1/model_types.go and
internal/modelcontroller (pod-hash over the pod spec), as summarised in reference/actions.md section 4;
the cacheProfile rule is the CRD's CEL validation ("url is immutable when using cacheProfile"), which
the API server answers with 422 Invalid. The "model controller" below is the test playing KubeAI.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic
import pytest
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubeai, kubernetes
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import MODELS, MakeContext, make_event

NS = "ai"


def seed_model(apiserver: ApiServer, **spec: Any) -> None:
    apiserver.seed(
        MODELS,
        {
            "apiVersion": "kubeai.org/v1",
            "kind": "Model",
            "metadata": {"name": "llama", "namespace": NS},
            "spec": {
                "url": "s3://models/llama/v1/",
                "engine": "VLLM",
                "features": ["TextGeneration"],
                "env": {"VLLM_LOGGING_LEVEL": "INFO"},
                "replicas": 2,
                **spec,
            },
            "status": {"replicas": {"all": 2, "ready": 2}},
        },
    )


def model(apiserver: ApiServer) -> dict[str, Any]:
    return apiserver.read(MODELS, NS, "llama")


async def test_new_artifact_url_rolls_the_model_once(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(namespace=NS, name="llama", url="s3://models/llama/v2/")

    await kubeai.reload(event=event, params=params, ctx=make_ctx())
    await kubeai.reload(event=event, params=params, ctx=make_ctx(attempt=2))

    obj = model(apiserver)
    assert obj["spec"]["url"] == "s3://models/llama/v2/"
    assert obj["spec"]["env"] == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert obj["metadata"]["generation"] == 2
    assert obj["metadata"]["annotations"][kubernetes.ANNOTATION_EVENT_ID] == "evt-1"
    assert apiserver.versions(MODELS, NS, "llama") == 2
    assert [w["contentType"] for w in apiserver.writes] == ["application/merge-patch+json"]


async def test_env_marker_from_the_event_identity(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(namespace=NS, name="llama")

    await kubeai.reload(event=event, params=params, ctx=make_ctx("harbor evt-1 reload"))
    first = model(apiserver)["spec"]["env"]
    await kubeai.reload(event=event, params=params, ctx=make_ctx("harbor evt-1 reload"))
    await kubeai.reload(event=make_event(id="evt-2"), params=params, ctx=make_ctx("harbor evt-2 reload"))
    second = model(apiserver)["spec"]["env"]

    assert first["VLLM_LOGGING_LEVEL"] == "INFO"
    assert first[kubeai.DEFAULT_ENV_MARKER] == kubernetes.key_hash("harbor evt-1 reload", 32)
    assert second[kubeai.DEFAULT_ENV_MARKER] != first[kubeai.DEFAULT_ENV_MARKER]
    assert model(apiserver)["metadata"]["generation"] == 3  # two events, two rollouts; the replay none


async def test_image_tag_and_a_named_marker(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(
        namespace=NS, name="llama", image="harbor.example/ai/vllm:0.9.1", env_marker="MODEL_REVISION"
    )
    await kubeai.reload(event=event, params=params, ctx=make_ctx())
    spec = model(apiserver)["spec"]
    assert spec["image"] == "harbor.example/ai/vllm:0.9.1"
    assert "MODEL_REVISION" in spec["env"] and kubeai.DEFAULT_ENV_MARKER not in spec["env"]


async def test_dry_run_is_checked_and_changes_nothing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(namespace=NS, name="llama", url="s3://models/llama/v2/")

    plan = await kubeai.reload(event=event, params=params, ctx=make_ctx(dry_run=True))

    assert plan is not None
    assert [(c.method, c.body["spec"]) for c in plan.calls] == [("PATCH", {"url": "s3://models/llama/v2/"})]
    assert apiserver.writes[-1]["query"]["dryRun"] == "All"
    assert model(apiserver)["spec"]["url"] == "s3://models/llama/v1/"


async def test_url_of_a_cached_model_is_refused_before_writing(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    """The CRD refuses it too (the double has its rule, schemas.py); glue says why without trying."""
    seed_model(apiserver, cacheProfile="efs")
    params = kubeai.ReloadParams(namespace=NS, name="llama", url="s3://models/llama/v2/")

    with pytest.raises(glue.PermanentError, match=r"cacheProfile 'efs'.*url is immutable"):
        await kubeai.reload(event=event, params=params, ctx=make_ctx())
    assert model(apiserver)["spec"]["url"] == "s3://models/llama/v1/"
    assert apiserver.writes == []


async def test_marker_reload_of_a_cached_model_is_refused_not_done(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    """kubeai internal/modelcontroller/cache.go loads the cache once per Model UID: new pods of the same
    Model read the weights already cached, so rolling them would report a reload that loads nothing."""
    seed_model(apiserver, cacheProfile="efs")
    params = kubeai.ReloadParams(namespace=NS, name="llama")

    with pytest.raises(glue.PermanentError, match=r"once per Model UID.*recreate the Model"):
        await kubeai.reload(event=event, params=params, ctx=make_ctx())
    with pytest.raises(glue.PermanentError, match="once per Model UID"):
        await kubeai.reload(event=event, params=params, ctx=make_ctx(dry_run=True))
    assert model(apiserver)["metadata"]["generation"] == 1
    assert [w for w in apiserver.writes if "dryRun" not in w["query"]] == []


async def test_image_of_a_cached_model_is_changed(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver, cacheProfile="efs")
    params = kubeai.ReloadParams(namespace=NS, name="llama", image="harbor.example/ai/vllm:0.9.1")

    await kubeai.reload(event=event, params=params, ctx=make_ctx())
    assert model(apiserver)["spec"]["image"] == "harbor.example/ai/vllm:0.9.1"


async def test_a_concurrent_writer_is_not_overwritten(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)

    def autoscaler() -> None:
        stored = apiserver.objects[MODELS, NS, "llama"]
        changed = model(apiserver)
        changed["spec"]["replicas"] = 3
        changed["metadata"]["resourceVersion"] = str(int(changed["metadata"]["resourceVersion"]) + 500)
        stored.history.append(changed)

    apiserver.before("PATCH", "/models/llama$", autoscaler)
    params = kubeai.ReloadParams(namespace=NS, name="llama", url="s3://models/llama/v2/")

    await kubeai.reload(event=event, params=params, ctx=make_ctx())

    spec = model(apiserver)["spec"]
    assert (spec["replicas"], spec["url"]) == (3, "s3://models/llama/v2/")
    assert [w["method"] for w in apiserver.writes] == ["PATCH", "PATCH"]  # 409, re-read, retried


async def test_wait_until_the_rollout_is_ready(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(
        namespace=NS, name="llama", url="s3://models/llama/v2/", wait=True, poll_interval=0.02
    )

    patching = asyncio.Event()
    apiserver.before("PATCH", "/models/llama$", patching.set)

    async def model_controller() -> None:
        await patching.wait()
        await asyncio.sleep(0.05)
        apiserver.set_status(MODELS, NS, "llama", {"replicas": {"all": 3, "ready": 2}})  # surge pod
        await asyncio.sleep(0.05)
        apiserver.set_status(MODELS, NS, "llama", {"replicas": {"all": 2, "ready": 2}})

    controller = asyncio.create_task(model_controller())
    await kubeai.reload(event=event, params=params, ctx=make_ctx())
    assert controller.done()  # returned only after the controller's last status
    assert model(apiserver)["status"]["replicas"] == {"all": 2, "ready": 2}


async def test_wait_times_out_as_a_temporary_error(
    apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_model(apiserver)
    params = kubeai.ReloadParams(
        namespace=NS,
        name="llama",
        url="s3://models/llama/v2/",
        wait=True,
        wait_timeout=0.2,
        poll_interval=0.05,
    )
    with pytest.raises(glue.TemporaryError, match=r"not ready within 0\.2s"):
        await kubeai.reload(event=event, params=params, ctx=make_ctx())
    assert model(apiserver)["spec"]["url"] == "s3://models/llama/v2/"  # the change itself is made


def test_params() -> None:
    with pytest.raises(pydantic.ValidationError):
        kubeai.ReloadParams(namespace=NS, name="x" * 41)
    with pytest.raises(pydantic.ValidationError):
        kubeai.ReloadParams(namespace=NS, name="llama", url="ftp://models/x")


@pytest.mark.parametrize("url", ["gs://bucket/llama", "oss://bucket/llama"])
def test_params_refuse_urls_the_crd_takes_only_with_an_immutable_cache(url: str) -> None:
    """kubeai api/k8s/v1/model_types.go: gs:// and oss:// only with a cacheProfile, whose url is immutable."""
    with pytest.raises(pydantic.ValidationError):
        kubeai.ReloadParams(namespace=NS, name="llama", url=url)


@pytest.mark.parametrize("url", ["hf://org/model", "pvc://weights/llama", "ollama://llama3:8b", "s3://b/k"])
def test_params_accept_the_urls_the_crd_takes(url: str) -> None:
    assert kubeai.ReloadParams(namespace=NS, name="llama", url=url).url == url


async def test_errors(apiserver: ApiServer, make_ctx: MakeContext, event: CloudEvent) -> None:
    params = kubeai.ReloadParams(namespace=NS, name="llama")
    with pytest.raises(glue.PermanentError, match="not found"):
        await kubeai.reload(event=event, params=params, ctx=make_ctx())
    with pytest.raises(glue.TemporaryError):
        await kubeai.reload(
            event=event, params=params.model_copy(update={"wait_for_target": True}), ctx=make_ctx()
        )
    seed_model(apiserver)
    apiserver.fail("PATCH", "/models/llama$", 503, headers={"Retry-After": "5"})
    with pytest.raises(glue.TemporaryError) as raised:
        await kubeai.reload(event=event, params=params, ctx=make_ctx())
    assert raised.value.delay == 5.0
