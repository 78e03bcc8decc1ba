"""The issuer's keys as the verifier caches them (glue.oidc against the local issuer, on a clock the
test moves): an unknown key id makes one refetch, and no more than one per interval; a key rotation is
taken up after that refetch; a cached key keeps working while the issuer is down; discovery must name
the configured issuer; Keycloak's realm roles are reached by a dotted claim path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from glue import identity, oidc, settings
from tests.oidc_issuer import Issuer, new_key, user

INTERVAL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def verifier(issuer: Issuer, clock: Clock, **extra: Any) -> oidc.Oidc:
    config = settings.Oidc.model_validate(issuer.settings(**extra))
    return oidc.Oidc(config, refetch_seconds=INTERVAL, clock=clock)


@pytest.fixture
async def checker(issuer: Issuer, clock: Clock) -> AsyncIterator[oidc.Oidc]:
    made = verifier(issuer, clock)
    try:
        yield made
    finally:
        await made.close()


async def refusal(checker: oidc.Oidc, token: str) -> identity.Refused:
    with pytest.raises(identity.Refused) as caught:
        await checker.principal(token)
    return caught.value


async def test_an_unknown_key_id_refetches_the_jwks_at_most_once_per_interval(
    issuer: Issuer, clock: Clock, checker: oidc.Oidc
) -> None:
    assert await checker.principal(issuer.token()) == identity.Principal("alice", "operator")
    assert issuer.jwks_fetches == 1
    clock.now += INTERVAL
    stranger = issuer.token(key=new_key("not-published"))
    refused = await refusal(checker, stranger)
    assert refused.status == 401 and "holds no key 'not-published'" in refused.reason
    assert issuer.jwks_fetches == 2  # it looked again before refusing
    for _ in range(5):  # a stream of unknown key ids does not turn into a stream of fetches
        assert (await refusal(checker, issuer.token(key=new_key("forged")))).status == 401
    assert issuer.jwks_fetches == 2
    assert await checker.principal(issuer.token()) == identity.Principal("alice", "operator")
    assert issuer.jwks_fetches == 2


async def test_a_key_rotation_is_taken_up_after_the_refetch(
    issuer: Issuer, clock: Clock, checker: oidc.Oidc
) -> None:
    old = issuer.token()
    assert (await checker.principal(old)).name == "alice"
    issuer.rotate()
    new = issuer.token(preferred_username="bob", groups=["glue-viewers"])
    # just after a fetch the new key waits for the interval
    assert "holds no key" in (await refusal(checker, new)).reason
    clock.now += INTERVAL
    assert await checker.principal(new) == identity.Principal("bob", "viewer")
    assert issuer.jwks_fetches == 2
    # the withdrawn key is no longer accepted
    assert "holds no key 'key-1'" in (await refusal(checker, old)).reason


async def test_with_the_issuer_down_cached_keys_still_verify(
    issuer: Issuer, clock: Clock, checker: oidc.Oidc
) -> None:
    assert (await checker.principal(issuer.token())).name == "alice"
    await issuer.stop()
    clock.now += 2 * oidc.MAX_AGE  # old enough to refresh, but the refresh fails: the cache answers
    assert (await checker.principal(issuer.token())).name == "alice"
    clock.now += INTERVAL
    refused = await refusal(checker, issuer.token(key=new_key("after-the-outage")))
    assert refused.status == 503 and refused.reason.startswith("the identity provider cannot be asked now")
    await issuer.start()
    clock.now += INTERVAL
    assert (
        "holds no key 'after-the-outage'"
        in (await refusal(checker, issuer.token(key=new_key("after-the-outage")))).reason
    )


async def test_discovery_must_name_the_configured_issuer(issuer: Issuer, checker: oidc.Oidc) -> None:
    issuer.discovery = {"issuer": "https://elsewhere.example/realms/test"}
    refused = await refusal(checker, issuer.token())
    assert refused.status == 503
    assert "names issuer 'https://elsewhere.example/realms/test', not " in refused.reason
    assert issuer.jwks_fetches == 0


async def test_realm_roles_by_a_dotted_claim_path(issuer: Issuer, clock: Clock) -> None:
    checker = verifier(issuer, clock, rolesClaim="realm_access.roles", operators=["glue-admin"], viewers=[])
    try:
        roles = {"realm_access": {"roles": ["offline_access", "glue-admin"]}}
        token = issuer.token(**user("dora", groups=None, **roles))
        assert await checker.principal(token) == identity.Principal("dora", "operator")
        refused = await refusal(checker, issuer.token(**user("erin", realm_access={"roles": ["x"]})))
        assert (refused.status, refused.reason) == (
            403,
            "erin holds none of the realm_access.roles values that grant a role",
        )
    finally:
        await checker.close()


async def test_the_authenticator_tries_static_tokens_first_and_sends_jwts_to_the_issuer(
    issuer: Issuer, clock: Clock, checker: oidc.Oidc
) -> None:
    config = settings.Admin.model_validate({"tokens": {"ci": {"value": "static"}}, "oidc": issuer.settings()})
    authenticator = identity.Authenticator(config, checker)
    assert authenticator.sso is checker
    assert await authenticator.bearer("static") == identity.Principal("ci", "operator")
    assert issuer.jwks_fetches == 0  # a static token never asks the issuer
    assert await authenticator.bearer(issuer.token()) == identity.Principal("alice", "operator")
    assert await authenticator.bearer(issuer.token(exp=1)) is None
    assert await authenticator.bearer("not.a-jwt") is None
    with pytest.raises(identity.Refused) as caught:
        await authenticator.check("a.b.c")
    assert caught.value.reason == "bearer JWT refused: not a JWT"
