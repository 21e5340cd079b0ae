"""The web client (web/) in headless Chromium against a real ``hearth serve`` process.

Two browser contexts are two people (each has its own cookie jar, so its own sign-in). The
tests drive the page the way a person would and assert what each one sees; every
console error or uncaught exception on either page fails the test.

Chromium comes from Debian (``/usr/bin/chromium``; ``HEARTH_CHROMIUM`` overrides), since
Playwright's own browser downloads are not available everywhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any, Self

import aiohttp
import pytest

from tests.helpers import GatewayClient, register

playwright_api = pytest.importorskip("playwright.async_api")
Browser = playwright_api.Browser
Page = playwright_api.Page
expect = playwright_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("HEARTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_PATH = shutil.which(CHROMIUM)
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = "/tmp/hearth-chat.png"
PASSWORD = "correct horse battery"
LIVE_MS = 5_000
"""How long a live event may take to show up on the other page."""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if CHROMIUM_PATH is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: `./dev test` installs Debian's chromium "
                    "(or set HEARTH_CHROMIUM)")
    async with playwright_api.async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Person:
    """One browser context (its own cookies: its own sign-in) with one page, watching
    for errors."""

    def __init__(self, page: Any, name: str, errors: list[str]) -> None:
        self.page = page
        self.name = name
        page.on("console", lambda m: errors.append(f"{name} console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"{name} page error: {e}"))

    @classmethod
    async def open(cls, browser: Any, url: str, name: str, errors: list[str]) -> Self:
        context = await browser.new_context(viewport={"width": 1180, "height": 740})
        person = cls(await context.new_page(), name, errors)
        await person.page.goto(url + "/")
        return person

    def tid(self, test_id: str) -> Any:
        return self.page.get_by_test_id(test_id)

    def message(self, text: str) -> Any:
        return self.page.locator('[data-testid="message"]:not([data-pending])').filter(
            has_text=text)

    def channel(self, name: str) -> Any:
        return self.page.locator(f'[data-testid="channel-link"][data-channel-name="{name}"]')

    async def register(self, username: str, display_name: str) -> None:
        await self.tid("auth-username").fill(username)
        await self.tid("auth-password").fill(PASSWORD)
        await self.tid("auth-display-name").fill(display_name)
        await self.tid("register-button").click()
        await self.connected()
        # A new account lands in the starter community, in #general.
        await expect(self.tid("channel-title")).to_have_text("# general")

    async def login(self, username: str) -> None:
        await self.tid("auth-username").fill(username)
        await self.tid("auth-password").fill(PASSWORD)
        await self.tid("login-button").click()
        await self.connected()

    async def connected(self) -> None:
        await expect(self.tid("connection-status")).to_have_text("connected", timeout=10_000)

    async def open_channel(self, name: str) -> None:
        await self.channel(name).click()
        await expect(self.tid("channel-title")).to_have_text(f"# {name}")
        await expect(self.tid("message-list")).not_to_contain_text("Loading…")

    async def send(self, text: str) -> None:
        await self.tid("composer-input").fill(text)
        await self.tid("composer-input").press("Enter")

    async def contents(self) -> list[str]:
        return [t.strip() for t in await self.page.locator(
            '[data-testid="message"]:not([data-pending]) [data-testid="message-content"]'
        ).all_inner_texts()]


async def test_two_people_chat_live_and_history_survives_reload(
        browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    alice = await Person.open(browser, hearth_server.url, "alice", errors)
    bob = await Person.open(browser, hearth_server.url, "bob", errors)
    await alice.register("alice", "Alice")
    await bob.register("bob", "Bob")
    await alice.open_channel("general")
    await bob.open_channel("general")

    # Alice types: Bob sees the indicator before any message exists.
    await alice.tid("composer-input").press_sequentially("hello from A", delay=30)
    await expect(bob.tid("typing-indicator")).to_have_text("Alice is typing…", timeout=LIVE_MS)

    # Alice sends with Enter: Bob sees it live, the indicator goes, Alice's copy confirms.
    await alice.tid("composer-input").press("Enter")
    await expect(alice.tid("composer-input")).to_have_value("")
    await expect(bob.message("hello from A")).to_have_count(1, timeout=LIVE_MS)
    await expect(bob.tid("typing-indicator")).to_have_text("")
    await expect(alice.message("hello from A")).to_have_count(1, timeout=LIVE_MS)
    await expect(alice.page.locator('[data-pending="true"]')).to_have_count(0)
    await expect(bob.message("hello from A").get_by_test_id("message-author")).to_have_text(
        "Alice")

    # Bob replies; Alice sees it live.
    await bob.send("hi A, B here")
    await expect(alice.message("hi A, B here")).to_have_count(1, timeout=LIVE_MS)

    # Bob reacts with the quick thumbs-up; both see the count.
    bobs_copy = bob.message("hello from A")
    await bobs_copy.hover()
    await bobs_copy.get_by_test_id("react-button").click()
    await expect(alice.message("hello from A").get_by_test_id("reaction-count")).to_have_text(
        "1", timeout=LIVE_MS)
    await expect(bobs_copy.get_by_test_id("reaction")).to_have_attribute("aria-pressed", "true")

    # Alice reloads: still signed in (the session cookie), the history has both messages in order.
    await alice.page.reload()
    await alice.connected()
    await expect(alice.message("hi A, B here")).to_have_count(1, timeout=LIVE_MS)
    contents = await alice.contents()
    assert contents.index("hello from A") < contents.index("hi A, B here"), contents
    await expect(alice.message("hello from A").get_by_test_id("reaction-count")).to_have_text("1")

    # And the page still works live after the reload.
    await bob.send("welcome back")
    await expect(alice.message("welcome back")).to_have_count(1, timeout=LIVE_MS)

    await alice.page.mouse.move(700, 300)
    await alice.page.screenshot(path=SCREENSHOT)
    assert errors == []


async def test_unread_resume_errors_edit_and_delete(browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    alice = await Person.open(browser, hearth_server.url, "alice", errors)
    bob = await Person.open(browser, hearth_server.url, "bob", errors)
    await alice.register("alice2", "Alice")
    await bob.register("bob2", "Bob")
    await bob.open_channel("introductions")

    # A message in a channel Bob is not looking at shows as an unread badge...
    await alice.send("ping in general")
    badge = bob.channel("general").get_by_test_id("unread-badge")
    await expect(badge).to_have_text("1", timeout=LIVE_MS)
    # ... which goes away when he opens the channel (mark_read), and stays away on reload.
    await bob.open_channel("general")
    await expect(bob.message("ping in general")).to_have_count(1)
    await expect(badge).to_have_count(0)
    await bob.page.wait_for_timeout(600)  # let the debounced mark_read reach the server
    await bob.page.reload()
    await bob.connected()
    await expect(bob.message("ping in general")).to_have_count(1, timeout=LIVE_MS)
    await expect(bob.page.get_by_test_id("unread-badge")).to_have_count(0)

    # Alice's socket drops: the page resumes the same session and catches up.
    session_id = await alice.page.evaluate("window.hearth.gw.sessionId")
    await alice.page.evaluate("window.hearth.dropConnection()")
    await expect(alice.tid("connection-status")).to_contain_text("reconnecting")
    await bob.send("sent while you were away")
    await alice.connected()
    await expect(alice.message("sent while you were away")).to_have_count(1, timeout=LIVE_MS)
    assert await alice.page.evaluate("window.hearth.gw.sessionId") == session_id

    # A resume the server refuses (invalid_session) falls back to a fresh identify.
    await alice.page.evaluate("window.hearth.gw.sessionId = 'no-such-session'")
    await alice.page.evaluate("window.hearth.dropConnection()")
    await alice.connected()
    await bob.send("after a fresh identify")
    await expect(alice.message("after a fresh identify")).to_have_count(1, timeout=LIVE_MS)
    assert await alice.page.evaluate("window.hearth.gw.sessionId") not in (
        session_id, "no-such-session")

    # An error frame is shown in words (its code kept in an attribute); the message
    # stays as not sent.
    await alice.send("x" * 4_001)
    await expect(alice.tid("error-text")).to_have_text(
        "That message is too long. Please shorten it.", timeout=LIVE_MS)
    await expect(alice.tid("error-text")).to_have_attribute("data-error-code",
                                                            "content_too_long")
    await expect(alice.page.locator('[data-pending="true"] [data-testid="message-status"]')
                 ).to_contain_text("not sent — That message is too long")

    # Alice edits her message; Bob sees the new text marked as edited.
    mine = alice.message("ping in general")
    await mine.hover()
    await mine.get_by_test_id("edit-button").click()
    await alice.tid("edit-input").fill("ping, edited")
    await alice.tid("edit-input").press("Enter")
    await expect(bob.message("ping, edited")).to_contain_text("(edited)", timeout=LIVE_MS)

    # Alice deletes it; it disappears for Bob. Bob cannot edit or delete Alice's messages.
    await expect(bob.message("ping, edited").get_by_test_id("edit-button")).to_have_count(0)
    alice.page.once("dialog", lambda dialog: dialog.accept())
    mine = alice.message("ping, edited")
    await mine.hover()
    await mine.get_by_test_id("delete-button").click()
    await expect(bob.message("ping, edited")).to_have_count(0, timeout=LIVE_MS)
    await expect(alice.message("ping, edited")).to_have_count(0)
    assert errors == []


async def test_login_errors_and_communities(browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    owner = await Person.open(browser, hearth_server.url, "owner", errors)
    guest = await Person.open(browser, hearth_server.url, "guest", errors)

    # A wrong password is explained on the form (the 401 itself is a console error in
    # Chromium's network log, which is expected here and nowhere else).
    await owner.register("olivia", "Olivia")
    await owner.tid("logout-button").click()
    await owner.tid("auth-username").fill("olivia")
    await owner.tid("auth-password").fill("not the password")
    await owner.tid("login-button").click()
    await expect(owner.tid("auth-error")).to_have_text(
        "That username and password don't match. Please try again.")
    await expect(owner.tid("auth-error")).to_have_attribute("data-error-code",
                                                            "invalid_credentials")
    await owner.tid("auth-password").fill(PASSWORD)
    await owner.tid("login-button").click()
    await owner.connected()
    errors[:] = [e for e in errors if "401" not in e]

    # Olivia creates a community and invites Gus, who joins with the code.
    await owner.tid("new-community-name").fill("Study Group")
    await owner.tid("create-community-button").click()
    study = owner.page.locator('[data-testid="community"]').filter(has_text="Study Group")
    await expect(study).to_have_count(1)
    await expect(owner.tid("channel-title")).to_have_text("# general")
    await owner.tid("invite-button").click()
    await expect(owner.tid("invite-code")).to_contain_text("Invite code: ")
    code = (await owner.tid("invite-code").inner_text()).split(": ", 1)[1].strip()

    await guest.register("gus", "Gus")
    await guest.tid("invite-code-input").fill(code)
    await guest.tid("join-button").click()
    await expect(guest.page.locator('[data-testid="community"]').filter(
        has_text="Study Group")).to_have_count(1)
    joined = guest.page.locator('[data-testid="community"]').filter(has_text="Study Group")
    await expect(joined.locator('[data-testid="channel-link"][aria-current="page"]')
                 ).to_have_attribute("data-channel-name", "general")
    await guest.send("glad to be here")
    await expect(owner.message("glad to be here")).to_have_count(1, timeout=LIVE_MS)
    await owner.send("welcome, Gus")
    await expect(guest.message("welcome, Gus")).to_have_count(1, timeout=LIVE_MS)

    # A channel created over REST shows up live in both sidebars (channel_create).
    token = await owner.page.evaluate("window.hearth.accessToken()")
    community_id = await study.get_attribute("data-community-id")
    async with aiohttp.ClientSession() as http, http.post(
            f"{hearth_server.url}/api/v1/communities/{community_id}/channels",
            json={"name": "homework"}, headers={"Authorization": f"Bearer {token}"}) as reply:
        assert reply.status == 201, await reply.text()
    await expect(guest.channel("homework")).to_have_count(1, timeout=LIVE_MS)
    await expect(owner.channel("homework")).to_have_count(1, timeout=LIVE_MS)
    await guest.open_channel("homework")
    await guest.send("first homework question")
    await owner.open_channel("homework")
    await expect(owner.message("first homework question")).to_have_count(1, timeout=LIVE_MS)
    assert errors == []


async def test_scrolling_up_loads_older_history(browser: Any, hearth_server: Any) -> None:
    # 70 messages through the raw gateway: more than one page (50) of history.
    async with aiohttp.ClientSession() as http:
        reply = await register(http, hearth_server.url, "carol", password=PASSWORD)
        client = await GatewayClient.identified(http, hearth_server.ws_url, reply["access_token"])
        general = client.channel_named("general")
        for i in range(70):
            await client.ok("send_message", channel_id=general["id"],
                            content=f"history {i:02d}", nonce=f"seed-{i}")
        await client.close()

    errors: list[str] = []
    carol = await Person.open(browser, hearth_server.url, "carol", errors)
    await carol.login("carol")
    await expect(carol.message("history 69")).to_have_count(1, timeout=LIVE_MS)
    await expect(carol.message("history 19")).to_have_count(0)  # only the newest page
    await carol.tid("message-list").evaluate("list => { list.scrollTop = 0; }")
    await expect(carol.message("history 00")).to_have_count(1, timeout=LIVE_MS)
    history = [c for c in await carol.contents() if c.startswith("history ")]
    assert history == [f"history {i:02d}" for i in range(70)]
    assert errors == []
