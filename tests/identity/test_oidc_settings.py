"""admin.oidc in the settings: what an operator writes is checked when the config loads, and a
mistake names the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from glue import settings

ISSUER = "https://sso.example.org/realms/platform"


def admin(**oidc: Any) -> dict[str, Any]:
    return {"admin": {"oidc": {"issuer": ISSUER, "clientId": "glue", "operators": ["ops"], **oidc}}}


def test_a_minimal_sso_config_and_its_defaults() -> None:
    loaded = settings.from_mapping(admin(), "glue.yaml").admin
    assert loaded is not None and loaded.oidc is not None
    oidc = loaded.oidc
    assert (oidc.api_audience, oidc.username_claim, oidc.roles_claim) == (
        "glue",
        "preferred_username",
        "groups",
    )
    assert oidc.scopes == ["openid", "profile", "email"] and oidc.client_secret is None
    other = settings.Oidc.model_validate(admin(audience="glue-api")["admin"]["oidc"])
    assert other.api_audience == "glue-api"


@pytest.mark.parametrize(
    ("oidc", "message"),
    [
        (
            {"issuer": "http://sso.example.org/realms/platform"},
            "glue.yaml: admin.oidc.issuer: Value error, 'http://sso.example.org/realms/platform': use https "
            "(plain http only to localhost): codes and tokens cross it",
        ),
        (
            {"issuer": "sso.example.org"},
            "admin.oidc.issuer: Value error, 'sso.example.org' is not an absolute",
        ),
        ({"operators": []}, "admin.oidc: Value error, operators or viewers: list the claim values"),
        (
            {"rolesClaim": "realm_access..roles"},
            "admin.oidc.rolesClaim: Value error, 'realm_access..roles' is not",
        ),
        ({"scopes": ["profile"]}, "admin.oidc: Value error, scopes: must include openid"),
        (
            {"redirectUrl": "glue.example.org/ui/login/sso/callback"},
            "admin.oidc.redirectUrl: Value error",
        ),
        (
            {"clientSecret": {"file": "/a", "env": "B"}},
            "admin.oidc.clientSecret: Value error, give exactly one",
        ),
        ({"groupClaim": "groups"}, "admin.oidc.groupClaim: "),
    ],
)
def test_a_wrong_sso_setting_names_its_field(oidc: dict[str, Any], message: str) -> None:
    with pytest.raises(settings.ConfigError) as caught:
        settings.from_mapping(admin(**oidc), "glue.yaml")
    assert message in str(caught.value)


def test_an_admin_api_without_tokens_or_sso_says_it_needs_one() -> None:
    with pytest.raises(settings.ConfigError, match=r"needs a token .*, named tokens or oidc"):
        settings.from_mapping({"admin": {"port": 8081}}, "glue.yaml")


def test_an_unreadable_client_secret_or_ca_file_is_named_at_load(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(settings.ConfigError) as caught:
        settings.from_mapping(admin(clientSecret={"file": str(missing)}, caFile=str(missing)), "glue.yaml")
    assert str(caught.value).splitlines() == [
        f"glue.yaml: admin.oidc.clientSecret: cannot read secret file {missing}: No such file or directory",
        f"glue.yaml: admin.oidc.caFile: cannot read {missing}",
    ]
