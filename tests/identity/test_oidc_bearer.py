"""The admin API of a running daemon with single sign-on: bearer JWTs of the issuer act or read by the
role their groups map to, the audit trail names the user, and every bad token is refused with the
reason (logged, never the token), while static tokens keep working when the issuer is down."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from glue import app, settings
from tests.oidc_issuer import CLIENT_ID, Issuer, new_key
from tests.support import admin_url, daemon_settings, running

STATIC = "a-static-token-for-scripts"


def config(tmp_path: Path, issuer: Issuer) -> settings.Settings:
    loaded = daemon_settings(
        tmp_path,
        admin={"port": 0, "tokens": {"ci": {"value": STATIC}}, "oidc": issuer.settings()},
        routes=[{"name": "restart", "handler": "log", "params": {"message": "restart"}}],
    )
    app.load_plugins(loaded)
    return loaded


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs) as response:
        return response.status, await response.json()


def reheaded(token: str, algorithm: str, secret: bytes | None = None) -> str:
    """``token``'s claims under a header of ``algorithm``: unsigned (``none``) or an HMAC keyed with
    ``secret`` (the confusion attack: the issuer's public key as an HMAC secret)."""
    header = {"alg": algorithm, "typ": "JWT", "kid": "key-1"}
    signing_input = b".".join((_b64(json.dumps(header).encode()), token.split(".")[1].encode()))
    signature = b"" if secret is None else _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_an_operator_acts_a_viewer_reads_and_the_audit_names_the_user(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with running(config(tmp_path, issuer)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        alice = issuer.token()  # groups: glue-operators
        status, body = await call(
            http, "POST", f"{url}/v1/routes/restart/pause", alice, json={"reason": "CHG-7"}
        )
        assert status == 200, body
        bob = issuer.token(preferred_username="bob", groups=["staff", "glue-viewers"])
        status, rows = await call(http, "GET", f"{url}/v1/routes", bob)
        assert status == 200 and rows[0]["state"] == "paused" and rows[0]["why"] == "CHG-7 (by alice)"
        status, body = await call(http, "POST", f"{url}/v1/routes/restart/resume", bob)
        assert (status, body) == (403, {"error": "bob may only read (role viewer)"})
        status, _ = await call(http, "POST", f"{url}/v1/routes/restart/resume", STATIC)
        assert status == 200
        trail = [(entry.who, entry.action) for entry in await daemon.journal.audit()]
        assert trail[1:] == [("alice", "pause"), ("ci", "resume")]


async def test_bad_tokens_are_refused_with_the_reason_and_logged_without_the_token(
    tmp_path: Path, issuer: Issuer
) -> None:
    impostor = new_key(issuer.key.kid or "")  # the same key id, another key
    refused = {
        "unknown kid": (issuer.token(key=new_key("not-published")), "the issuer's JWKS holds no key"),
        "expired": (issuer.token(exp=1_000_000), "it has expired"),
        "wrong audience": (
            issuer.token(aud="another-app"),
            f"its audience (aud) does not include {CLIENT_ID}",
        ),
        "wrong issuer": (issuer.token(iss="http://127.0.0.1:1/realms/evil"), "it is not from the issuer"),
        "bad signature": (issuer.token(key=impostor), "the signature does not verify"),
        "alg none": (reheaded(issuer.token(), "none"), "algorithm 'none' is not accepted"),
        "HS256 keyed with the public key": (
            reheaded(issuer.token(), "HS256", issuer.key.as_pem(private=False)),
            "algorithm 'HS256' is not accepted",
        ),
        "no user name": (issuer.token(preferred_username=None), "it has no preferred_username claim"),
        "not yet valid": (issuer.token(nbf=4_000_000_000), "nbf"),
    }
    async with running(config(tmp_path, issuer)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        with capture_logs() as logs:
            for case, (token, reason) in refused.items():
                status, body = await call(http, "POST", f"{url}/v1/pause", token, json={})
                assert status == 401, case
                assert body["error"].startswith("bearer JWT refused: ") and reason in body["error"], case
            carol = issuer.token(preferred_username="carol", groups=["staff"])
            status, body = await call(http, "GET", f"{url}/v1/routes", carol)
            assert (status, body) == (
                403,
                {"error": "carol holds none of the groups values that grant a role"},
            )
        reasons = [line["reason"] for line in logs if line["event"] == "admin API refused"]
        assert len(reasons) == len(refused) + 1 and "carol holds none" in reasons[-1]
        assert not any(token.split(".")[1] in repr(logs) for token, _ in refused.values())
        assert await daemon.journal.rails() == {}


async def test_with_the_issuer_down_static_tokens_work_and_a_jwt_is_a_503(
    tmp_path: Path, issuer: Issuer
) -> None:
    await issuer.stop()
    async with running(config(tmp_path, issuer)) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        status, body = await call(http, "GET", f"{url}/v1/routes", issuer.token())
        assert status == 503
        assert body["error"].startswith("the identity provider cannot be asked now: ")
        assert issuer.url.removeprefix("http://") in body["error"]
        status, _ = await call(http, "GET", f"{url}/v1/routes", STATIC)
        assert status == 200
        # a token that is no JWT is a wrong static token, whatever the issuer's state
        status, body = await call(http, "GET", f"{url}/v1/routes", "nope")
        assert (status, body) == (401, {"error": "a valid bearer token is required"})
