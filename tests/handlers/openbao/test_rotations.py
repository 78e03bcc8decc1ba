"""The rotation handlers against the OpenBao double (double.py names the OpenBao documents it follows) and,
for the restart follow-ups, the Kubernetes API double of tests/handlers/kubernetes: each kind of rotation
happens once per event however often the event is delivered, and a failure between the write and the
follow-up resumes without a second rotation. The autouse guard in conftest.py checks every log line of
every test for the values OpenBao holds."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import string
from collections.abc import MutableMapping
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

import glue
from handlers import kubernetes, openbao
from tests.handlers.kubernetes.apiserver import ApiServer
from tests.handlers.kubernetes.conftest import MakeContext
from tests.handlers.openbao.conftest import DEPLOYMENTS, deployment, make_event
from tests.handlers.openbao.double import Connection, OpenBaoDouble, StaticRole, TransitKey

OLD = {"username": "app", "password": "old-password-value-1"}


def kv_params(**kw: Any) -> openbao.KvParams:
    return openbao.KvParams.model_validate({"path": "app/db", **kw})


def seed_kv(bao: OpenBaoDouble) -> None:
    bao.kv_put("secret", "app/db", OLD)


# --------------------------------------------------------------------------------------------- KV v2


async def test_kv_same_event_twice_rotates_once(
    bao: OpenBaoDouble,
    make_ctx: MakeContext,
    event: CloudEvent,
    no_secret_in_logs: list[MutableMapping[str, Any]],
) -> None:
    seed_kv(bao)

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())
    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    secret = bao.kv["secret"]["app/db"]
    assert secret.current_version == 2
    new = bao.kv_data("secret", "app/db")
    assert new["username"] == "app"  # other fields kept
    assert new["password"] != OLD["password"]
    assert secret.custom_metadata is not None
    assert secret.custom_metadata[openbao.MARK_EVENT] == "/test evt-1"
    assert secret.custom_metadata[openbao.MARK_FROM] == "1"
    messages = [r["event"] for r in no_secret_in_logs]
    assert messages == ["secret rotated", "secret already rotated by this event"]


async def test_kv_another_event_rotates_again(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx("/test evt-1 rotate"))
    await openbao.kv_rotate(
        event=make_event(id="evt-2"), params=kv_params(), ctx=make_ctx("/test evt-2 rotate")
    )

    assert bao.kv["secret"]["app/db"].current_version == 3


async def test_kv_password_follows_the_declared_policy(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    policy = {
        "type": "password",
        "length": 24,
        "rules": [
            {"charset": "digits", "minChars": 6},
            {"charset": "symbols", "minChars": 3},
            {"charset": "lower"},
        ],
    }

    await openbao.kv_rotate(event=event, params=kv_params(generate=policy), ctx=make_ctx())

    password = bao.kv_data("secret", "app/db")["password"]
    assert len(password) == 24
    assert sum(c in string.digits for c in password) >= 6
    assert sum(c in openbao.CHARSETS["symbols"] for c in password) >= 3
    assert set(password) <= set(string.digits + openbao.CHARSETS["symbols"] + string.ascii_lowercase)


async def test_kv_random_bytes_base64(bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent) -> None:
    seed_kv(bao)

    params = kv_params(field="key", generate={"type": "bytes", "bytes": 48, "encoding": "base64url"})
    await openbao.kv_rotate(event=event, params=params, ctx=make_ctx())

    value = bao.kv_data("secret", "app/db")["key"]
    assert len(base64.urlsafe_b64decode(value)) == 48


def test_policy_that_cannot_be_met_is_rejected_when_the_route_loads() -> None:
    with pytest.raises(ValueError, match="more characters than length"):
        kv_params(generate={"type": "password", "length": 8, "rules": [{"charset": "digits", "minChars": 9}]})
    with pytest.raises(ValueError):
        kv_params(path="../other")


async def test_kv_lost_answer_of_the_write_is_recognised(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    bao.fail("POST", "secret/data/app/db", 502, ["upstream connection reset"], after=True)

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    # The write took effect, its answer was lost, the retry was refused on check-and-set and the version
    # after the one read was recognised as ours: one new version, not two.
    assert bao.kv["secret"]["app/db"].current_version == 2


async def test_kv_concurrent_writer_rotation_retries_from_the_read(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    theirs = {"username": "app2", "password": "someone-elses-value-2"}
    bao.on("POST", "secret/data/app/db", lambda: bao.kv_put("secret", "app/db", theirs))

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    secret = bao.kv["secret"]["app/db"]
    assert secret.current_version == 3  # theirs is 2, ours on top of it
    ours = bao.kv_data("secret", "app/db")
    assert ours["username"] == "app2"
    assert ours["password"] not in (theirs["password"], OLD["password"])
    assert secret.custom_metadata is not None and secret.custom_metadata[openbao.MARK_FROM] == "2"


async def test_kv_interrupted_attempt_is_completed_once_by_the_replay(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    bao.fail("POST", "secret/data/app/db", 500, ["internal error"], times=6)

    with pytest.raises(glue.TemporaryError, match="500 internal error"):
        await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())
    assert bao.kv["secret"]["app/db"].current_version == 1  # marked, not written

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())
    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    assert bao.kv["secret"]["app/db"].current_version == 2


async def test_kv_rotation_where_metadata_cas_is_required(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    # OpenBao 2.4 and later (internal/builtin/logical/kv/path_config.go, path_metadata.go): with
    # metadata_cas_required on the mount, a metadata write without metadata_cas is refused with 400.
    seed_kv(bao)
    bao.kv_metadata_cas_required["secret"] = True

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())
    await openbao.kv_rotate(event=event, params=kv_params(create=True, path="app/new"), ctx=make_ctx("k2"))

    secret = bao.kv["secret"]["app/db"]
    assert secret.current_version == 2
    assert secret.current_metadata_version == 1  # one marked rotation, compared against version 0
    assert secret.custom_metadata is not None and secret.custom_metadata[openbao.MARK_FROM] == "1"
    assert bao.kv["secret"]["app/new"].current_version == 1  # created: metadata_cas 0 for new metadata


async def test_kv_concurrent_metadata_writer_is_not_overwritten(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    # Between the rotation's metadata read and its metadata write, another client sets its own key.
    bao.on(
        "POST", "secret/metadata/app/db", lambda: bao.kv_put_metadata("secret", "app/db", {"owner": "team-b"})
    )

    await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    secret = bao.kv["secret"]["app/db"]
    assert secret.current_version == 2
    assert secret.custom_metadata is not None
    assert secret.custom_metadata["owner"] == "team-b"  # theirs kept
    assert secret.custom_metadata[openbao.MARK_EVENT] == "/test evt-1"  # ours added on top


async def test_kv_missing_secret_is_permanent_unless_create(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    with pytest.raises(glue.PermanentError, match="secret/app/db does not exist"):
        await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    await openbao.kv_rotate(event=event, params=kv_params(create=True), ctx=make_ctx())

    assert bao.kv["secret"]["app/db"].current_version == 1
    assert set(bao.kv_data("secret", "app/db")) == {"password"}


async def test_kv_permission_denied_is_permanent_and_names_no_value(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    bao.denied.append(re.compile(r"secret/data/app/db"))

    with pytest.raises(glue.PermanentError) as caught:
        await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx())

    message = str(caught.value)
    assert "403 permission denied" in message
    assert "GET /v1/secret/data/app/db" in message  # the read of the fields to keep
    assert "the token is valid" in message and "the read capability on secret/data/app/db" in message
    assert OLD["password"] not in message
    assert bao.count("POST", "auth/kubernetes/login") == 1  # a policy denial is no reason to log in again


async def test_kv_sealed_past_the_deadline_is_temporary(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    bao.sealed = True

    with pytest.raises(glue.TemporaryError, match="Vault is sealed"):
        await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx(timeout=0.3))

    bao.sealed = False
    assert bao.kv["secret"]["app/db"].current_version == 1


async def test_kv_dry_run_plan_names_paths_and_versions_never_values(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    seed_kv(bao)
    params = kv_params(restart=[{"namespace": "apps", "name": "web"}])

    plan = await openbao.kv_rotate(event=event, params=params, ctx=make_ctx(dry_run=True))

    assert isinstance(plan, glue.Plan)
    assert bao.kv["secret"]["app/db"].current_version == 1  # nothing written
    assert bao.kv["secret"]["app/db"].custom_metadata is None
    text = json.dumps(plan.to_dict())
    assert OLD["password"] not in text
    assert "version 2" in plan.summary
    mark = next(c for c in plan.calls if c.method == "POST" and "/metadata/" in c.target)
    assert mark.body["metadata_cas"] == 0  # the metadata version read
    write = next(c for c in plan.calls if c.method == "POST" and "/data/" in c.target)
    assert write.target == "/v1/secret/data/app/db"
    assert write.body["options"] == {"cas": 1}
    assert write.body["data"] == {"password": "<generated password, 32 characters>"}
    restart = plan.calls[-1]
    assert restart.target == "/apis/apps/v1/namespaces/apps/deployments/web"
    assert restart.body["spec"]["template"]["metadata"]["annotations"][openbao.ANNOTATION_VERSION] == (
        "secret/app/db@2"
    )


async def test_dry_run_without_openbao_still_plans(make_ctx: MakeContext, event: CloudEvent) -> None:
    unreachable = glue.Clients(
        glue.registry,
        {
            "openbao": {
                "address": "http://127.0.0.1:9",
                "auth": {"method": "token", "tokenEnv": "NO_SUCH_VARIABLE_FOR_TESTS"},
                "retry": {"attempts": 1},
            }
        },
    )
    async with unreachable.opened():
        plan = await openbao.kv_rotate(
            event=event, params=kv_params(), ctx=make_ctx(dry_run=True, clients=unreachable)
        )

    assert isinstance(plan, glue.Plan)
    assert "not checked" in plan.summary
    assert plan.calls[-1].body["options"] == {"cas": "<current version>"}


async def test_unconfigured_client_is_a_clear_permanent_error(
    make_ctx: MakeContext, event: CloudEvent
) -> None:
    empty = glue.Clients(glue.registry, {})
    async with empty.opened():
        with pytest.raises(
            glue.PermanentError, match=r"clients.openbao is not valid: address: Field required"
        ):
            await openbao.kv_rotate(event=event, params=kv_params(), ctx=make_ctx(clients=empty))


# --------------------------------------------------------------------------------------------- database


def seed_role(bao: OpenBaoDouble) -> StaticRole:
    role = bao.static_roles["database"]["app"] = StaticRole(db_name="pg", username="app")
    return role


async def test_rotate_role_same_event_twice_rotates_once(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    role = seed_role(bao)
    params = openbao.DatabaseRoleParams(role="app")

    await openbao.database_rotate_role(event=event, params=params, ctx=make_ctx())
    await openbao.database_rotate_role(event=event, params=params, ctx=make_ctx())

    assert role.rotations == 1
    [entry] = bao.kv["secret"].values()  # the ledger entry of this invocation
    assert entry.current_version == 2
    assert entry.versions[2]["data"]["state"] == "done"
    assert entry.versions[2]["data"]["after"] == role.last_vault_rotation


async def test_rotate_role_lost_answer_then_replay_does_not_rotate_again(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    role = seed_role(bao)
    params = openbao.DatabaseRoleParams(role="app")
    bao.fail("POST", "database/rotate-role/app", 502, ["upstream error"], after=True)

    with pytest.raises(glue.TemporaryError, match="502"):
        await openbao.database_rotate_role(event=event, params=params, ctx=make_ctx())
    assert role.rotations == 1

    await openbao.database_rotate_role(event=event, params=params, ctx=make_ctx())

    assert role.rotations == 1


async def test_rotate_role_another_event_rotates_again(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    role = seed_role(bao)
    params = openbao.DatabaseRoleParams(role="app")

    await openbao.database_rotate_role(event=event, params=params, ctx=make_ctx("/test evt-1 rotate"))
    await openbao.database_rotate_role(
        event=make_event(id="2"), params=params, ctx=make_ctx("/test 2 rotate")
    )

    assert role.rotations == 2


async def test_rotate_role_missing_role_is_permanent(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    with pytest.raises(glue.PermanentError, match="database/app does not exist"):
        await openbao.database_rotate_role(
            event=event, params=openbao.DatabaseRoleParams(role="app"), ctx=make_ctx()
        )


async def test_rotate_root_same_event_twice_rotates_once(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    connection = bao.connections["database"]["pg"] = Connection()
    params = openbao.DatabaseRootParams(connection="pg")

    await openbao.database_rotate_root(event=event, params=params, ctx=make_ctx())
    await openbao.database_rotate_root(event=event, params=params, ctx=make_ctx())

    assert connection.root_rotations == 1


async def test_rotate_root_dry_run_changes_nothing(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    connection = bao.connections["database"]["pg"] = Connection()

    plan = await openbao.database_rotate_root(
        event=event, params=openbao.DatabaseRootParams(connection="pg"), ctx=make_ctx(dry_run=True)
    )

    assert isinstance(plan, glue.Plan)
    assert connection.root_rotations == 0
    assert bao.kv["secret"] == {}
    assert [c.method for c in plan.calls] == ["GET", "POST", "POST", "POST"]
    assert plan.calls[2].target == "/v1/database/rotate-root/pg"


# --------------------------------------------------------------------------------------------- transit


async def test_transit_same_event_twice_rotates_once(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})
    params = openbao.TransitParams(key="orders")

    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())
    assert key.latest_version == 2

    await openbao.transit_rotate(
        event=make_event(id="evt-2"), params=params, ctx=make_ctx("/test evt-2 rotate")
    )
    assert key.latest_version == 3


@pytest.mark.parametrize("type_", ["ed25519", "rsa-2048", "ecdsa-p256"])
async def test_transit_asymmetric_key_restart_takes_the_version_creation_time(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
    type_: str,
) -> None:
    key = bao.transit["transit"]["signing"] = TransitKey({1: 1_700_000_000}, type=type_)
    apiserver.seed(DEPLOYMENTS, deployment())
    params = openbao.TransitParams.model_validate(
        {"key": "signing", "restart": [{"namespace": "apps", "name": "web"}]}
    )

    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))

    assert key.latest_version == 2
    annotations = template_annotations(apiserver)
    assert annotations[openbao.ANNOTATION_VERSION] == "transit/keys/signing@2"
    created = datetime.datetime.fromtimestamp(key.versions[2], datetime.UTC)
    assert annotations[kubernetes.RESTARTED_AT] == created.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_transit_rotation_through_a_standby_without_active_node_waits_for_one(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    # internal/http/handler.go forwardRequest: no active node known -> 500, and nothing was done.
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})

    def leader_lost() -> None:  # for 0.1 s from the rotation on
        bao.standby_without_leader = True
        asyncio.get_running_loop().call_later(0.1, setattr, bao, "standby_without_leader", False)

    bao.on("POST", "transit/keys/orders/rotate", leader_lost)

    await openbao.transit_rotate(event=event, params=openbao.TransitParams(key="orders"), ctx=make_ctx())

    assert key.latest_version == 2


async def test_transit_lost_answer_then_replay_does_not_rotate_again(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})
    params = openbao.TransitParams(key="orders")
    bao.fail("POST", "transit/keys/orders/rotate", 502, ["upstream error"], after=True)

    with pytest.raises(glue.TemporaryError):
        await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())

    assert key.latest_version == 2


async def test_transit_done_record_failing_after_the_rotation_resumes_without_rotating(
    bao: OpenBaoDouble, make_ctx: MakeContext, event: CloudEvent
) -> None:
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})
    params = openbao.TransitParams(key="orders")
    # Once the rotation is under way, the ledger cannot be written: the "done" record fails.
    ledger = r"secret/data/runtime-glue/rotations/\w+"
    bao.on(
        "POST",
        "transit/keys/orders/rotate",
        lambda: bao.fail("POST", ledger, 503, ["Vault is sealed"], times=99),
    )

    with pytest.raises(glue.TemporaryError, match="Vault is sealed"):
        await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(timeout=0.5))
    assert key.latest_version == 2
    bao.faults.clear()

    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx())

    assert key.latest_version == 2
    [entry] = bao.kv["secret"].values()
    assert entry.versions[entry.current_version]["data"]["state"] == "done"


# --------------------------------------------------------------------------------------------- follow-ups


def template_annotations(apiserver: ApiServer) -> dict[str, str]:
    annotations: dict[str, str] = apiserver.read(DEPLOYMENTS, "apps", "web")["spec"]["template"][
        "metadata"
    ].get("annotations", {})
    return annotations


async def test_kv_rotation_restarts_the_workload_with_the_new_version(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
) -> None:
    seed_kv(bao)
    apiserver.seed(DEPLOYMENTS, deployment())
    params = kv_params(restart=[{"namespace": "apps", "name": "web"}])

    await openbao.kv_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))

    created = bao.kv["secret"]["app/db"].versions[2]["created_time"]
    annotations = template_annotations(apiserver)
    assert annotations[openbao.ANNOTATION_VERSION] == "secret/app/db@2"
    assert annotations[kubernetes.RESTARTED_AT] == created[:19] + "Z"
    assert apiserver.versions(DEPLOYMENTS, "apps", "web") == 2


async def test_failure_between_write_and_follow_up_resumes_without_second_rotation(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
) -> None:
    seed_kv(bao)
    apiserver.seed(DEPLOYMENTS, deployment())
    apiserver.fail("PATCH", r"/deployments/web$", 503, message="etcd leader changed")
    params = kv_params(restart=[{"namespace": "apps", "name": "web"}])

    with pytest.raises(glue.TemporaryError, match="etcd leader changed"):
        await openbao.kv_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))
    assert bao.kv["secret"]["app/db"].current_version == 2  # rotated
    assert apiserver.versions(DEPLOYMENTS, "apps", "web") == 1  # not restarted

    await openbao.kv_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))
    await openbao.kv_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))

    assert bao.kv["secret"]["app/db"].current_version == 2  # not rotated again
    assert apiserver.versions(DEPLOYMENTS, "apps", "web") == 2  # restarted once
    assert template_annotations(apiserver)[openbao.ANNOTATION_VERSION] == "secret/app/db@2"


async def test_transit_follow_up_failure_resumes_without_second_rotation(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
) -> None:
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})
    apiserver.seed(DEPLOYMENTS, deployment())
    apiserver.fail("PATCH", r"/deployments/web$", 503, message="etcd leader changed")
    params = openbao.TransitParams.model_validate(
        {"key": "orders", "restart": [{"namespace": "apps", "name": "web"}]}
    )

    with pytest.raises(glue.TemporaryError):
        await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))

    assert key.latest_version == 2
    assert apiserver.versions(DEPLOYMENTS, "apps", "web") == 2
    annotations = template_annotations(apiserver)
    assert annotations[openbao.ANNOTATION_VERSION] == "transit/keys/orders@2"
    assert annotations[kubernetes.RESTARTED_AT].endswith("Z")


async def test_rotate_root_restart_value_is_stable_across_replays(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
) -> None:
    connection = bao.connections["database"]["pg"] = Connection()
    apiserver.seed(DEPLOYMENTS, deployment())
    params = openbao.DatabaseRootParams.model_validate(
        {"connection": "pg", "restart": [{"namespace": "apps", "name": "web"}]}
    )

    for _ in range(3):
        await openbao.database_rotate_root(event=event, params=params, ctx=make_ctx(clients=clients_k8s))

    assert connection.root_rotations == 1
    assert apiserver.versions(DEPLOYMENTS, "apps", "web") == 2  # restarted once
    assert template_annotations(apiserver)[openbao.ANNOTATION_VERSION].startswith("database/config/pg@")


async def test_dry_run_after_the_rotation_plans_nothing(
    bao: OpenBaoDouble,
    apiserver: ApiServer,
    clients_k8s: glue.Clients,
    make_ctx: MakeContext,
    event: CloudEvent,
) -> None:
    key = bao.transit["transit"]["orders"] = TransitKey({1: 1_700_000_000})
    apiserver.seed(DEPLOYMENTS, deployment())
    params = openbao.TransitParams.model_validate(
        {"key": "orders", "restart": [{"namespace": "apps", "name": "web"}]}
    )
    await openbao.transit_rotate(event=event, params=params, ctx=make_ctx(clients=clients_k8s))
    writes = len(apiserver.writes)

    plan = await openbao.transit_rotate(
        event=event, params=params, ctx=make_ctx(dry_run=True, clients=clients_k8s)
    )

    assert isinstance(plan, glue.Plan)
    assert plan.calls == []
    assert "already rotated" in plan.summary
    assert key.latest_version == 2
    assert len(apiserver.writes) == writes
