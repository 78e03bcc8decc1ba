"""The OpenBao client against the API double (double.py, which names the OpenBao documents it follows):
authentication, token upkeep, namespaces, custom CA, and which answers are retried within the deadline."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from handlers import openbao_client
from tests.handlers.openbao.conftest import JWT, ROLE
from tests.handlers.openbao.double import OpenBaoDouble, TransitKey


def config(bao: OpenBaoDouble, auth: dict[str, Any], **extra: Any) -> openbao_client.Config:
    return openbao_client.Config.model_validate(
        {
            "address": bao.url,
            "auth": auth,
            "retry": {"initial": 0.01, "maximum": 0.05, "attempts": 5},
            **extra,
        }
    )


@pytest.fixture
async def client(bao_config: dict[str, Any]) -> AsyncIterator[openbao_client.OpenBao]:
    async with openbao_client.OpenBao(openbao_client.Config.model_validate(bao_config)) as bao:
        yield bao


async def test_kubernetes_login_once_then_token_reused(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.kv_put("secret", "app/db", {"password": "p"})

    for _ in range(3):
        meta = await client.kv_metadata("secret", "app/db")
        assert meta is not None and meta["current_version"] == 1

    assert bao.count("POST", "auth/kubernetes/login") == 1
    assert client.logins == 1


async def test_token_is_revoked_when_the_client_closes(
    bao: OpenBaoDouble, bao_config: dict[str, Any]
) -> None:
    async with openbao_client.OpenBao(openbao_client.Config.model_validate(bao_config)) as client:
        await client.kv_metadata("secret", "x")
        assert len(bao.tokens) == 1

    assert bao.tokens == {}
    assert bao.count("POST", "auth/token/revoke-self") == 1


async def test_service_account_token_is_read_again_at_each_login(
    bao: OpenBaoDouble, client: openbao_client.OpenBao, sa_token: Path
) -> None:
    await client.kv_metadata("secret", "missing")
    rotated = JWT + ".rotated"
    bao.kubernetes_roles["kubernetes"][ROLE] = {rotated}  # kubelet rotated the projected token
    sa_token.write_text(rotated)  # noqa: ASYNC240 (a few bytes: the kubelet rotating the token)
    bao.revoke_all()

    assert await client.kv_metadata("secret", "missing") is None  # 403 -> login with the new JWT -> 404

    assert bao.count("POST", "auth/kubernetes/login") == 2


async def test_wrong_role_is_a_clear_refusal(bao: OpenBaoDouble, sa_token: Path) -> None:
    cfg = config(bao, {"method": "kubernetes", "role": "nobody", "tokenFile": str(sa_token)})
    async with openbao_client.OpenBao(cfg) as client:
        with pytest.raises(openbao_client.OpenBaoError) as caught:
            await client.kv_metadata("secret", "app/db")
    assert caught.value.status == 400
    assert 'invalid role name "nobody"' in str(caught.value)
    assert JWT not in str(caught.value)


async def test_approle_login_with_secret_id_from_environment(
    bao: OpenBaoDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    bao.approles["approle"]["role-1"] = "secret-id-value-123"
    monkeypatch.setenv("BAO_SECRET_ID", "secret-id-value-123")
    cfg = config(bao, {"method": "approle", "roleId": "role-1", "secretIdEnv": "BAO_SECRET_ID"})
    async with openbao_client.OpenBao(cfg) as client:
        assert await client.kv_metadata("secret", "none") is None
    assert bao.count("POST", "auth/approle/login") == 1


def wrapped_approle(bao: OpenBaoDouble, tmp_path: Path) -> tuple[openbao_client.Config, Path]:
    """The trusted-orchestrator set-up of docs/auth/approle.mdx: the role id in the configuration, a
    response-wrapped secret id delivered as a file."""
    wrapping_file = tmp_path / "wrapped-secret-id"
    wrapping_file.write_text(bao.wrap_secret_id("role-1") + "\n")
    auth = {"method": "approle", "roleId": "role-1", "secretIdWrappingTokenFile": str(wrapping_file)}
    return config(bao, auth), wrapping_file


async def test_approle_wrapped_secret_id_is_unwrapped_once_at_login(
    bao: OpenBaoDouble, tmp_path: Path
) -> None:
    cfg, _ = wrapped_approle(bao, tmp_path)
    async with openbao_client.OpenBao(cfg) as client:
        assert await client.kv_metadata("secret", "none") is None
        bao.revoke_all()  # the next call logs in again: with the secret id already unwrapped
        assert await client.kv_metadata("secret", "none") is None

    assert bao.count("POST", "sys/wrapping/lookup") == 1
    assert bao.count("POST", "sys/wrapping/unwrap") == 1
    assert bao.count("POST", "auth/approle/login") == 2
    assert bao.wrapped == {}


async def test_approle_new_wrapping_token_is_unwrapped_at_the_next_login(
    bao: OpenBaoDouble, tmp_path: Path
) -> None:
    cfg, wrapping_file = wrapped_approle(bao, tmp_path)
    async with openbao_client.OpenBao(cfg) as client:
        assert await client.kv_metadata("secret", "none") is None
        # The orchestrator issues a new secret id (the old one stops working) and delivers it wrapped.
        wrapping_file.write_text(bao.wrap_secret_id("role-1"))
        bao.revoke_all()
        assert await client.kv_metadata("secret", "none") is None

    assert bao.count("POST", "sys/wrapping/unwrap") == 2


async def test_approle_wrapping_token_used_by_someone_else_is_a_clear_login_failure(
    bao: OpenBaoDouble, tmp_path: Path
) -> None:
    cfg, wrapping_file = wrapped_approle(bao, tmp_path)
    wrapping_token = wrapping_file.read_text().strip()
    bao.wrapped.clear()  # unwrapped by someone else on the way

    async with openbao_client.OpenBao(cfg) as client:
        with pytest.raises(openbao_client.LoginFailed) as caught:
            await client.kv_metadata("secret", "none")

    message = str(caught.value)
    assert str(wrapping_file) in message
    assert "already unwrapped" in message and "intercepted" in message
    assert wrapping_token not in message
    assert bao.count("POST", "auth/approle/login") == 0


async def test_approle_wrapping_token_of_another_path_is_not_unwrapped(
    bao: OpenBaoDouble, tmp_path: Path
) -> None:
    cfg, wrapping_file = wrapped_approle(bao, tmp_path)
    wrapping_file.write_text(bao.wrap("sys/wrapping/wrap", {"secret_id": "planted-secret-id"}))

    async with openbao_client.OpenBao(cfg) as client:
        with pytest.raises(openbao_client.LoginFailed, match="sys/wrapping/wrap"):
            await client.kv_metadata("secret", "none")

    assert bao.count("POST", "sys/wrapping/unwrap") == 0
    assert bao.count("POST", "auth/approle/login") == 0


def test_approle_takes_exactly_one_secret_id_source(bao: OpenBaoDouble, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="exactly one of secretIdFile, secretIdEnv or secretIdWrappingTokenFile"
    ):
        config(
            bao,
            {
                "method": "approle",
                "roleId": "r",
                "secretIdEnv": "X",
                "secretIdWrappingTokenFile": str(tmp_path / "w"),
            },
        )


async def test_plain_token_from_file_is_looked_up_not_logged_in(bao: OpenBaoDouble, tmp_path: Path) -> None:
    token = bao.issue_token(ttl=0)
    (tmp_path / "t").write_text(token)
    async with openbao_client.OpenBao(
        config(bao, {"method": "token", "tokenFile": str(tmp_path / "t")})
    ) as c:
        assert await c.kv_metadata("secret", "none") is None
    assert bao.count("GET", "auth/token/lookup-self") == 1
    assert bao.count("POST", "auth/kubernetes/login") == 0


async def test_missing_token_source_is_a_configuration_error(bao: OpenBaoDouble) -> None:
    with pytest.raises(ValueError, match="exactly one of tokenFile or tokenEnv"):
        config(bao, {"method": "token"})


async def test_token_renewed_at_two_thirds_of_its_lease(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.token_ttl = 1
    await client.kv_metadata("secret", "x")
    await asyncio.sleep(0.75)  # past 2/3 of the 1 s lease, before it ends

    await client.kv_metadata("secret", "x")

    assert bao.count("POST", "auth/token/renew-self") == 1
    assert bao.count("POST", "auth/kubernetes/login") == 1


async def test_renewal_capped_by_max_ttl_logs_in_again(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.token_ttl = 1
    bao.token_max_ttl = 1  # renew-self can no longer extend the lease
    await client.kv_metadata("secret", "x")
    await asyncio.sleep(0.75)

    await client.kv_metadata("secret", "x")

    assert bao.count("POST", "auth/token/renew-self") == 1
    assert bao.count("POST", "auth/kubernetes/login") == 2
    assert list(bao.tokens) == [bao.issued[-1]]  # the replaced token was revoked, not left to its TTL


async def test_revoked_token_logs_in_again_once(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    await client.kv_metadata("secret", "x")
    bao.revoke_all()

    assert await client.kv_metadata("secret", "x") is None

    assert bao.count("POST", "auth/kubernetes/login") == 2


async def test_policy_denial_is_reported_without_logging_in_again(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.denied.append(re.compile(r"secret/metadata/locked"))

    with pytest.raises(openbao_client.PermissionDenied) as caught:
        await client.kv_metadata("secret", "locked")

    assert caught.value.status == 403
    assert caught.value.errors == ("permission denied",)
    assert caught.value.capability == "read"
    assert "GET /v1/secret/metadata/locked" in str(caught.value)
    assert "the token is valid" in str(caught.value)
    assert bao.count("GET", "auth/token/lookup-self") == 1  # the token was looked up
    assert bao.count("POST", "auth/kubernetes/login") == 1  # and kept: no second login
    assert len(bao.tokens) == 1  # no token left behind


async def test_revoked_token_is_looked_up_then_replaced(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    await client.kv_metadata("secret", "x")
    bao.revoke_all()

    assert await client.kv_metadata("secret", "x") is None

    assert bao.count("POST", "auth/kubernetes/login") == 2
    assert len(bao.tokens) == 1


async def test_denial_after_a_fresh_login_is_a_policy_denial(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    await client.kv_metadata("secret", "x")
    bao.revoke_all()
    bao.denied.append(re.compile(r"secret/data/locked"))

    with pytest.raises(openbao_client.PermissionDenied, match="create or update"):
        await client.kv_write("secret", "locked", {"password": "value-never-shown-1"}, cas=0)

    assert bao.count("POST", "auth/kubernetes/login") == 2  # the revoked token replaced once, no more


async def test_namespace_header_is_sent(sa_token: Path) -> None:
    bao = OpenBaoDouble(namespace="team-a")
    bao.kubernetes_roles["kubernetes"][ROLE] = {JWT}
    await bao.start()
    try:
        bao.kv_put("secret", "app", {"k": "v"})
        auth = {"method": "kubernetes", "role": ROLE, "tokenFile": str(sa_token)}
        async with openbao_client.OpenBao(config(bao, auth, namespace="team-a/")) as client:
            assert (await client.kv_metadata("secret", "app") or {})["current_version"] == 1
        async with openbao_client.OpenBao(config(bao, auth)) as client:
            with pytest.raises(openbao_client.OpenBaoError) as caught:
                await client.kv_metadata("secret", "app")
        assert caught.value.status == 404  # outside the namespace the mounts do not exist
    finally:
        await bao.stop()


async def test_sealed_then_unsealed_is_retried(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    bao.sealed = True
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, setattr, bao, "sealed", False)

    assert await client.kv_metadata("secret", "x") is None


async def test_quota_429_is_retried(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    bao.kv_put("secret", "x", {"a": "b"})
    await client.kv_metadata("secret", "x")
    bao.fail(
        "GET",
        "secret/metadata/x",
        429,
        ['request path "secret/metadata/x": rate limit quota exceeded'],
        times=2,
    )

    assert (await client.kv_metadata("secret", "x") or {})["current_version"] == 1


async def test_sealed_past_the_deadline_gives_up_before_it(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.sealed = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.2

    with pytest.raises(openbao_client.Unavailable) as caught:
        await client.kv_metadata("secret", "x", deadline=deadline)

    assert loop.time() <= deadline
    assert caught.value.status == 503
    assert "Vault is sealed" in str(caught.value)


async def test_standby_redirects_to_the_active_node_keeping_method_and_body(
    bao: OpenBaoDouble, client: openbao_client.OpenBao, sa_token: Path
) -> None:
    standby = OpenBaoDouble()
    standby.leader = bao.url
    await standby.start()
    try:
        cfg = config(standby, {"method": "kubernetes", "role": ROLE, "tokenFile": str(sa_token)})
        async with openbao_client.OpenBao(cfg) as via_standby:
            written = await via_standby.kv_write("secret", "app", {"password": "from-standby-1"}, cas=0)
        assert written["version"] == 1
        assert bao.kv_data("secret", "app") == {"password": "from-standby-1"}
        assert standby.count("POST", "secret/data/app") == 0  # the standby only redirected
    finally:
        await standby.stop()


async def test_standby_without_leader_is_retried(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    await client.kv_metadata("secret", "x")
    bao.standby_without_leader = True
    asyncio.get_running_loop().call_later(0.05, setattr, bao, "standby_without_leader", False)

    assert await client.kv_metadata("secret", "x") is None


async def test_standby_without_active_node_is_retried_also_for_a_call_not_safe_to_repeat(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    # internal/http/handler.go forwardRequest: a standby that knows no active node answers 500 without
    # forwarding anything, so even a rotation can be sent again.
    bao.transit["transit"]["k"] = TransitKey({1: 1})
    await client.transit_key("transit", "k")
    bao.standby_without_leader = True
    asyncio.get_running_loop().call_later(0.05, setattr, bao, "standby_without_leader", False)

    answer = await client.transit_rotate("transit", "k")

    assert answer["latest_version"] == 2
    assert bao.transit["transit"]["k"].latest_version == 2


async def test_standby_500_that_stays_is_unavailable_not_ambiguous(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.transit["transit"]["k"] = TransitKey({1: 1})
    await client.transit_key("transit", "k")
    bao.standby_without_leader = True

    with pytest.raises(openbao_client.Unavailable) as caught:
        await client.transit_rotate("transit", "k")

    assert caught.value.status == 500
    assert not caught.value.ambiguous  # nothing was forwarded: the rotation did not happen
    assert bao.transit["transit"]["k"].latest_version == 1


async def test_lost_answer_of_a_rotation_is_not_repeated(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.transit["transit"]["k"] = TransitKey({1: 1})
    bao.fail("POST", "transit/keys/k/rotate", 502, ["upstream error"], after=True)

    with pytest.raises(openbao_client.OpenBaoError) as caught:
        await client.transit_rotate("transit", "k")

    assert caught.value.status == 502
    assert bao.transit["transit"]["k"].latest_version == 2  # it took effect once, and was not sent again


async def test_cas_mismatch_is_reported_not_retried(
    bao: OpenBaoDouble, client: openbao_client.OpenBao
) -> None:
    bao.kv_put("secret", "app", {"password": "old-value-1"})

    with pytest.raises(openbao_client.OpenBaoError) as caught:
        await client.kv_write("secret", "app", {"password": "new-value-2"}, cas=0)

    assert caught.value.cas_mismatch
    assert "new-value-2" not in str(caught.value)
    assert bao.count("POST", "secret/data/app") == 0


async def test_error_messages_mask_written_values(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    bao.fail("POST", "secret/data/app", 400, ["bad value: s3cr3t-value-in-error"])

    with pytest.raises(openbao_client.OpenBaoError) as caught:
        await client.kv_write("secret", "app", {"password": "s3cr3t-value-in-error"}, cas=0)

    assert "s3cr3t-value-in-error" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_custom_ca(tmp_path: Path, sa_token: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    bao = OpenBaoDouble()
    bao.kubernetes_roles["kubernetes"][ROLE] = {JWT}
    await bao.start(ssl_context=server_ctx)
    try:
        auth = {"method": "kubernetes", "role": ROLE, "tokenFile": str(sa_token)}
        async with openbao_client.OpenBao(config(bao, auth, caFile=str(tmp_path / "ca.pem"))) as client:
            assert await client.kv_metadata("secret", "x") is None
        async with openbao_client.OpenBao(config(bao, auth)) as client:
            with pytest.raises(openbao_client.OpenBaoError, match="TLS failed") as caught:
                await client.kv_metadata("secret", "x")  # the system store does not know this CA
        assert not isinstance(caught.value, openbao_client.Unavailable)  # not retried: permanent
    finally:
        await bao.stop()


async def test_health_reports_sealed_and_standby(bao: OpenBaoDouble, client: openbao_client.OpenBao) -> None:
    assert (await client.health())["sealed"] is False
    bao.sealed = True
    assert (await client.health())["sealed"] is True
