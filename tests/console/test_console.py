"""The operator console in a real browser against a real daemon: log in with a token (a wrong one is
refused), watch events arrive live, read why a route did not match, retry a dead letter and approve
an invocation; viewers get no action forms; everything from events is text; every page has labels
and can be used from the keyboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, expect
from structlog.testing import capture_logs

from glue import app
from tests.console.conftest import OPS, VIEWER, admin_url, console_settings, post_event
from tests.support import base_url, eventually, running

pytestmark = pytest.mark.slow

PAGES = ("/", "/events", "/routes", "/dead-letters", "/approvals", "/audit")


async def post_gitlab_push(daemon: app.Daemon, ref: str, message: str) -> None:
    body = {
        "object_kind": "push",
        "ref": ref,
        "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "project": {"path_with_namespace": "platform/glue"},
        "commits": [{"id": "da15608", "message": message}],
    }
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Webhook-UUID": "7f0d3c1e-0000-4000-8000-000000000001"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url(daemon)}/gitlab", json=body, headers=headers) as response,
    ):
        assert response.status == 202


async def log_in(browser: BrowserContext, url: str, token: str, path: str = "/") -> Page:
    page = await browser.new_page()
    await page.goto(f"{url}/ui{path}")
    await expect(page).to_have_url(re.compile(r"/ui/login"))
    await page.get_by_label("Admin API token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(rf"/ui{re.escape(path)}$"))
    return page


async def test_a_wrong_token_is_refused_and_logged_without_the_token(
    tmp_path: Path, browser: BrowserContext
) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        page = await browser.new_page()
        await page.goto(f"{admin_url(daemon)}/ui/events")
        with capture_logs() as logs:
            await page.get_by_label("Admin API token").fill("not-the-token")
            async with page.expect_response(re.compile(r"/ui/login$")) as answer:
                await page.get_by_role("button", name="Log in").click()
            assert (await answer.value).status == 401
        await expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
        assert await page.context.cookies() == []
        refused = [line for line in logs if line["event"] == "admin API refused"]
        assert [line["reason"] for line in refused] == ["wrong bearer token at login"]
        assert "not-the-token" not in repr(logs)
        # a wrong bearer token is refused the same way; the webhook port serves no console
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"{admin_url(daemon)}/ui/", headers={"Authorization": "Bearer nope"}
            ) as response:
                assert response.status == 401
            async with http.get(f"{base_url(daemon)}/ui/", headers={"Authorization": f"Bearer {OPS}"}) as r:
                assert r.status == 404


async def test_events_arrive_live_and_the_event_says_why_a_route_did_not_match(
    tmp_path: Path, browser: BrowserContext, artifacts: Path
) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        page = await log_in(browser, admin_url(daemon), OPS, "/events")
        await expect(page.locator("#live-state")).to_have_text("Newest first, live.")
        # posted after the page loaded: it appears without a reload (server-sent events)
        await post_gitlab_push(daemon, "refs/heads/dev", "fix: <script>alert('x')</script> in the banner")
        row = page.locator("#events tbody tr").filter(has_text="gitlab.push")
        await expect(row).to_have_count(1)
        await row.get_by_role("link").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Event")
        deploy = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="deploy-main"))
        await expect(deploy).to_contain_text('data.ref == "refs/heads/main" is false')
        await expect(deploy).to_contain_text('"refs/heads/dev"')  # the value it saw
        # the commit message is shown as text, and no script of it runs
        await expect(page.locator("pre.data")).to_contain_text("<script>alert('x')</script>")
        assert await page.locator("main script").count() == 0
        response = await page.reload()
        assert response is not None
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        await page.screenshot(path=artifacts / "event.png", full_page=True)


async def test_retry_a_dead_letter_and_see_it_done(
    tmp_path: Path, browser: BrowserContext, artifacts: Path
) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        await post_event(daemon, "gated", "g-1", {})

        async def dead() -> Any:
            return (await daemon.journal.invocations(state="dead")) or None

        [item] = await eventually(dead)
        page = await log_in(browser, admin_url(daemon), OPS, "/dead-letters")
        await expect(page.locator("main")).to_contain_text("gate")
        await page.get_by_role("button", name=f"Retry dead letter {item.id}").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Retry 1 dead letter?")
        await page.screenshot(path=artifacts / "dead-letters-confirm.png", full_page=True)
        (tmp_path / "gate").touch()  # the fault is fixed; now retry
        await page.get_by_role("button", name="Yes, retry").click()
        await expect(page.get_by_role("status")).to_have_text("retried 1")

        async def done() -> Any:
            found = await daemon.journal.invocation(item.id)
            return found is not None and found.state == "done"

        await eventually(done)
        await page.goto(f"{admin_url(daemon)}/ui/")
        gated = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="gated"))
        await expect(gated).to_contain_text("1 done, 1 dead")
        await page.goto(f"{admin_url(daemon)}/ui/events/{item.event_seq}")
        await expect(page.locator(f"#inv-{item.id} .state")).to_have_text("done")
        await page.goto(f"{admin_url(daemon)}/ui/audit")
        entry = page.get_by_role("row").filter(has_text="dlq retry")
        await expect(entry).to_contain_text("ops")


async def test_approve_a_waiting_invocation_with_a_note(tmp_path: Path, browser: BrowserContext) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        await post_event(daemon, "rotate", "r-1", {"path": "kv/db"})

        async def awaiting() -> Any:
            return (await daemon.journal.invocations(state="awaiting-approval")) or None

        [item] = await eventually(awaiting)
        page = await log_in(browser, admin_url(daemon), OPS, "/approvals")
        await expect(page.locator(f"#inv-{item.id} pre")).to_contain_text("rotate r-1")
        await page.get_by_label("Note").fill("change 4711")
        await page.get_by_role("button", name=f"Approve {item.id}").click()
        await expect(page.get_by_role("status")).to_have_text(f"approved {item.id}")

        async def done() -> Any:
            found = await daemon.journal.invocation(item.id)
            return found is not None and found.state == "done"

        await eventually(done)
        [entry] = [e for e in await daemon.journal.audit() if e.action == "approve"]
        assert (entry.who, entry.reason) == ("ops", "change 4711")


async def test_a_viewer_sees_no_action_form_and_may_not_post(tmp_path: Path, browser: BrowserContext) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        await post_event(daemon, "rotate", "r-2", {})
        await eventually(lambda: daemon.journal.invocations(state="awaiting-approval"))
        page = await log_in(browser, admin_url(daemon), VIEWER, "/approvals")
        await expect(page.locator("main")).to_contain_text("rotate r-2")
        for path in PAGES:
            await page.goto(f"{admin_url(daemon)}/ui{path}")
            # the one form that posts is the header's log-out
            assert await page.locator("form[method=post]").count() == 1, path
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{admin_url(daemon)}/ui/routes/rotate/pause",
                headers={"Authorization": f"Bearer {VIEWER}"},
                data={"reason": "x"},
            ) as response,
        ):
            assert response.status == 403
        assert await daemon.journal.rails() == {}


async def test_every_page_has_labels_and_works_from_the_keyboard(
    tmp_path: Path, browser: BrowserContext, artifacts: Path
) -> None:
    async with running(console_settings(tmp_path)) as daemon:
        await post_event(daemon, "gated", "g-2", {})
        await post_event(daemon, "rotate", "r-3", {})
        await eventually(lambda: daemon.journal.invocations(state="dead"))
        page = await log_in(browser, admin_url(daemon), OPS)
        for path in PAGES:
            await page.goto(f"{admin_url(daemon)}/ui{path}")
            unlabelled = await page.evaluate(
                """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                       .filter(e => e.labels.length === 0).map(e => e.name)"""
            )
            assert unlabelled == [], path
            # Tab first reaches the skip link, which moves focus to the content
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
            await page.keyboard.press("Enter")
            assert await page.evaluate("document.activeElement.id") == "main"
            # every control of the page is reached by Tab, in turn
            controls = await page.evaluate(
                """() => [...document.querySelectorAll(
                       'main :is(a[href], input:not([type=hidden]), select, textarea, button)')]
                       .map((e, i) => { e.dataset.k = String(i); return e.dataset.k; })"""
            )
            reached: set[str] = set()
            for _ in range(8 * len(controls)):  # a date-time field takes a Tab per part
                if reached >= set(controls):
                    break
                await page.keyboard.press("Tab")
                reached.add(await page.evaluate("document.activeElement.dataset.k"))
            assert set(controls) <= reached, path
            name = path.strip("/") or "overview"
            await page.screenshot(path=artifacts / f"{name}.png", full_page=True)


async def test_bearer_requests_act_without_csrf_and_a_session_needs_it(tmp_path: Path) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address (127.0.0.1)
    async with running(console_settings(tmp_path)) as daemon, aiohttp.ClientSession(cookie_jar=jar) as http:
        url = admin_url(daemon)
        bearer = {"Authorization": f"Bearer {OPS}"}
        async with http.get(f"{url}/ui/routes", headers=bearer) as response:
            assert response.status == 200
            assert "form-action 'self'" in response.headers["Content-Security-Policy"]
        async with http.post(
            f"{url}/ui/routes/gated/pause",
            headers=bearer,
            data={"reason": "by script"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
        assert (await daemon.journal.rails())["gated"].reason == "by script"
        # a browser session: the cookie's attributes, and an action without the form's token refused
        async with http.post(f"{url}/ui/login", data={"token": OPS}, allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.headers["Set-Cookie"]
            assert all(part in cookie for part in ("HttpOnly", "SameSite=Strict", "Path=/ui"))
            assert OPS not in cookie
        async with http.post(f"{url}/ui/routes/gated/resume", data={}, allow_redirects=False) as response:
            assert response.status == 403
        async with http.get(f"{url}/ui/routes") as response:
            token = re.search(r'name="csrf" value="([^"]+)"', await response.text())
            assert token is not None
        async with http.post(
            f"{url}/ui/routes/gated/resume", data={"csrf": token.group(1)}, allow_redirects=False
        ) as response:
            assert response.status == 303
        assert not (await daemon.journal.rails())["gated"].paused
        async with http.get(f"{url}/ui/events?status=nonsense") as response:
            assert response.status == 400
            assert "status: one of" in await response.text()


async def test_repeated_wrong_tokens_lock_the_address_out(tmp_path: Path) -> None:
    loaded = console_settings(tmp_path, lockout={"failures": 3})
    async with running(loaded) as daemon, aiohttp.ClientSession() as http:
        url = admin_url(daemon)
        for _ in range(3):
            async with http.post(f"{url}/ui/login", data={"token": "guess"}) as response:
                assert response.status == 401
        # locked out: even the right token is answered 429 for a while
        async with http.post(f"{url}/ui/login", data={"token": OPS}, allow_redirects=False) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) > 0
