"""The console's login through the identity provider in a real browser: the local issuer (the Keycloak
stand-in) logs Alice in by the authorization-code flow with PKCE, the console's session follows, and
her approval is recorded under her name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, expect

from tests.console.conftest import admin_url, console_settings, post_event
from tests.oidc_issuer import Issuer
from tests.support import eventually, running

pytestmark = pytest.mark.slow


async def test_an_operator_signs_in_through_the_provider_and_approves(
    tmp_path: Path, browser: BrowserContext, issuer: Issuer
) -> None:
    async with running(console_settings(tmp_path, oidc=issuer.settings())) as daemon:
        await post_event(daemon, "rotate", "r-sso", {})

        async def awaiting() -> Any:
            return (await daemon.journal.invocations(state="awaiting-approval")) or None

        [item] = await eventually(awaiting)
        page = await browser.new_page()
        await page.goto(f"{admin_url(daemon)}/ui/approvals")
        await page.get_by_role("link", name="Sign in with single sign-on").click()
        await expect(page).to_have_url(re.compile(r"/ui/approvals$"))
        await expect(page.locator("header")).to_contain_text("alice (operator)")
        await page.get_by_role("button", name=f"Approve {item.id}").click()
        await expect(page.get_by_role("status")).to_have_text(f"approved {item.id}")
        [entry] = [e for e in await daemon.journal.audit() if e.action == "approve"]
        assert entry.who == "alice"
