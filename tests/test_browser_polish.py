"""The web client's quality bar across its pages, in headless Chromium against a real
``hearth serve`` process: an axe-core audit of every page in the states worth checking
(no serious or critical findings), keyboard use of the chat page's popups and panels,
dark mode (the system's and the user menu's), a phone-sized screen (390x844, nothing
scrolls sideways, screenshots under /tmp), and the first load of the chat page with the
static files' caching and compression.

Every console error fails a test; waits are on conditions, never fixed sleeps.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests import test_browser as tb
from tests.a11y import Audit
from tests.helpers import bearer, register
from tests.test_browser import browser  # noqa: F401  (a plain Chromium)

expect = tb.expect
pytestmark = tb.pytestmark

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


async def _account_with_community(base: str) -> tuple[str, int]:
    """A person who owns a community of their own (so /mod and /settings open for them),
    made through the REST API: the test's setup, not the page's."""
    async with aiohttp.ClientSession() as http:
        account = await register(http, base, password=tb.PASSWORD)
        async with http.post(f"{base}/api/v1/communities", json={"name": "Pottery Club"},
                             headers=bearer(account["access_token"])) as reply:
            assert reply.status == 201, await reply.text()
            cid = int((await reply.json())["community"]["id"])
    return str(account["user"]["username"]), cid


async def _person(chromium: Any, base: str, errors: list[str], *, viewport: dict[str, int],
                  scheme: str = "light", name: str = "person") -> tb.Person:
    context = await chromium.new_context(viewport=viewport, color_scheme=scheme)
    person = tb.Person(await context.new_page(), name, errors)
    await person.page.goto(base + "/")
    return person


async def _fits(page: Any, what: str) -> None:
    """Nothing on the page scrolls sideways."""
    widths = await page.evaluate(
        "({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " view: window.innerWidth})")
    assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], (what, widths)


async def _dark(page: Any) -> bool:
    """Whether the page draws in its dark colours: the text token is light."""
    return bool(await page.evaluate("""() => {
      const probe = document.createElement("span");
      probe.style.color = "var(--text)";
      document.body.append(probe);
      const [r, g, b] = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
      probe.remove();
      return r + g + b > 3 * 128;
    }"""))


async def test_chat_page_audit_keyboard_and_theme_toggle(
        browser: Any, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    """Sign-in, then the chat page with messages, the member list, a thread and the
    emoji picker open pass axe; popups close on Escape and give the focus back; the user
    menu's theme choice is kept across a reload and passes axe in dark too."""
    errors: list[str] = []
    base = hearth_server.url
    username, _ = await _account_with_community(base)
    person = await _person(browser, base, errors, viewport=DESKTOP)
    await expect(person.tid("auth-view")).to_be_visible(timeout=tb.LIVE_MS)
    await axe(person.page, "the sign-in form")
    await person.login(username)
    await person.channel("general").first.click()
    await expect(person.tid("channel-title")).to_have_text("# general")
    await person.send("hello **everyone**")
    await person.send("a second message")
    await expect(person.message("a second message")).to_have_count(1, timeout=tb.LIVE_MS)
    await expect(person.tid("member-list")).to_contain_text(username, timeout=tb.LIVE_MS)
    await axe(person.page, "the chat page with messages and the member list")

    # The emoji picker, opened and closed from the keyboard.
    emoji = person.tid("composer-emoji-button")
    await emoji.focus()
    await emoji.press("Enter")
    await expect(person.tid("emoji-picker")).to_be_visible()
    await expect(person.tid("emoji-search")).to_be_focused()
    await axe(person.page, "the chat page with the emoji picker open")
    await person.page.keyboard.press("Escape")
    await expect(person.tid("emoji-picker")).to_have_count(0)
    await expect(emoji).to_be_focused()

    # A thread panel, closed with Escape: the focus goes back to the conversation.
    first = person.message("hello")
    await first.hover()
    await first.get_by_test_id("thread-button").click()
    await expect(person.tid("thread-panel")).to_be_visible()
    await expect(person.tid("thread-input")).to_be_focused(timeout=tb.LIVE_MS)
    await axe(person.page, "the chat page with a thread open")
    await person.page.keyboard.press("Escape")
    await expect(person.tid("thread-panel")).to_be_hidden()
    focused = await person.page.evaluate(
        "document.activeElement?.dataset.testid ?? document.activeElement?.tagName")
    assert focused in ("thread-button", "composer-input"), focused

    # The user menu: keyboard-operable, Escape returns to its button; the theme choice.
    menu_button = person.tid("user-menu-button")
    await menu_button.focus()
    await menu_button.press("Enter")
    await expect(person.tid("user-menu")).to_be_visible()
    theme = person.tid("theme-toggle")
    await expect(theme).to_be_focused()
    await person.page.keyboard.press("ArrowDown")
    await expect(person.tid("sign-out")).to_be_focused()
    await person.page.keyboard.press("ArrowUp")
    await expect(theme).to_be_focused()
    await expect(theme).to_have_text("Theme: System")
    await axe(person.page, "the chat page with the user menu open")
    await theme.click()
    await expect(theme).to_have_text("Theme: Light")
    await theme.click()
    await expect(theme).to_have_text("Theme: Dark")
    assert await _dark(person.page)
    await person.page.keyboard.press("Escape")
    await expect(person.tid("user-menu")).to_be_hidden()
    await expect(menu_button).to_be_focused()
    await person.page.reload()
    await person.connected()
    await expect(person.page.locator("html")).to_have_attribute("data-theme", "dark")
    assert await _dark(person.page)
    await expect(person.message("a second message")).to_have_count(1, timeout=tb.LIVE_MS)
    await axe(person.page, "the chat page in the dark theme picked in the user menu")
    assert errors == []


async def test_every_page_on_a_phone_in_dark_mode(
        browser: Any, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    """390x844 with the system in dark mode: sign-in, chat, /mod, /voice and /settings
    are dark, fit the width, pass axe; the chat page's channel list and member list are
    panels opened by buttons and closed by a pick or Escape; the composer works."""
    errors: list[str] = []
    base = hearth_server.url
    username, cid = await _account_with_community(base)
    person = await _person(browser, base, errors, viewport=PHONE, scheme="dark")
    page = person.page
    await expect(person.tid("auth-view")).to_be_visible(timeout=tb.LIVE_MS)
    assert await _dark(page)
    await _fits(page, "sign-in")
    await axe(page, "the sign-in form on a phone, dark")
    await page.screenshot(path="/tmp/hearth-phone-signin.png")
    await person.login(username)

    # Chat: the conversation fills the screen; the channel list is a panel.
    await expect(person.tid("sidebar")).to_be_hidden()
    await expect(person.tid("member-panel")).to_be_hidden()
    toggle = person.tid("sidebar-toggle")
    await toggle.click()
    await expect(person.tid("sidebar")).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await _fits(page, "chat with the channel list open")
    await axe(page, "the chat page's channel list on a phone, dark")
    await page.screenshot(path="/tmp/hearth-phone-chat-channels.png")
    await person.channel("general").first.click()
    await expect(person.tid("sidebar")).to_be_hidden()
    await expect(person.tid("channel-title")).to_have_text("# general")
    await person.tid("sidebar-toggle").click()
    await expect(person.tid("sidebar")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(person.tid("sidebar")).to_be_hidden()
    await expect(toggle).to_be_focused()

    composer = person.tid("composer-input")
    await expect(composer).to_be_in_viewport()
    await expect(person.tid("send-button")).to_be_in_viewport()
    await person.send("sent from a phone")
    await expect(person.message("sent from a phone")).to_have_count(1, timeout=tb.LIVE_MS)
    await _fits(page, "chat")
    await axe(page, "the chat page on a phone, dark")
    await page.screenshot(path="/tmp/hearth-phone-chat.png")

    members = person.tid("members-toggle")
    await members.click()
    await expect(person.tid("member-panel")).to_be_visible()
    await expect(person.tid("member-list")).to_contain_text(username, timeout=tb.LIVE_MS)
    await _fits(page, "chat with the member list open")
    await axe(page, "the chat page's member list on a phone, dark")
    await page.screenshot(path="/tmp/hearth-phone-chat-members.png")
    await person.tid("member-list").locator("button").first.focus()
    await page.keyboard.press("Escape")
    await expect(person.tid("member-panel")).to_be_hidden()
    await expect(members).to_be_focused()

    # The other pages, in the same signed-in browser.
    for path, ready, shot in (
            (f"/mod?community={cid}", "console", "mod"),
            (f"/voice?community={cid}", "voice-view", "voice"),
            (f"/settings?community={cid}", "settings-title", "settings")):
        await page.goto(base + path)
        await expect(person.tid(ready)).to_be_visible(timeout=tb.LIVE_MS)
        await expect(person.tid("shell-user-name")).not_to_have_text("", timeout=tb.LIVE_MS)
        assert await _dark(page), path
        await _fits(page, path)
        await axe(page, f"{path} on a phone, dark")
        await page.screenshot(path=f"/tmp/hearth-phone-{shot}.png", full_page=True)
    assert errors == []


async def test_pages_pass_axe_on_a_desktop_in_light_and_dark(
        browser: Any, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    """/mod, /voice and /settings at desktop size, light and dark."""
    errors: list[str] = []
    base = hearth_server.url
    username, cid = await _account_with_community(base)
    for scheme in ("light", "dark"):
        person = await _person(browser, base, errors, viewport=DESKTOP, scheme=scheme,
                               name=scheme)
        page = person.page
        await person.login(username)
        for path, ready in ((f"/mod?community={cid}", "console"),
                            (f"/voice?community={cid}", "voice-view"),
                            (f"/settings?community={cid}", "settings-title")):
            await page.goto(base + path)
            await expect(person.tid(ready)).to_be_visible(timeout=tb.LIVE_MS)
            await expect(person.tid("shell-user-name")).not_to_have_text("", timeout=tb.LIVE_MS)
            assert await _dark(page) == (scheme == "dark"), (path, scheme)
            await _fits(page, path)
            await axe(page, f"{path}, {scheme}")
        await page.context.close()
    assert errors == []


async def test_first_load_and_static_file_caching(
        browser: Any, hearth_server: Any) -> None:  # noqa: F811
    """A signed-in reader's chat page loads with no failed request (the time to the
    channel list is printed for docs/BENCHMARKS.md, not asserted: the machine is shared);
    static files are compressed and revalidated with their ETag."""
    errors: list[str] = []
    base = hearth_server.url
    username, _ = await _account_with_community(base)
    person = await _person(browser, base, errors, viewport=DESKTOP)
    await person.login(username)
    failed: list[str] = []
    person.page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    person.page.on("response", lambda r: failed.append(f"{r.url}: {r.status}")
                   if r.status >= 400 else None)
    figures = []
    for _ in range(3):  # the first visit fills the cache; later ones revalidate
        # (a reload aborts what the page still has in flight: let it settle first)
        await person.page.wait_for_load_state("networkidle")
        await person.page.reload()
        await person.connected()
        await expect(person.channel("general").first).to_be_visible(timeout=tb.LIVE_MS)
        figures.append(await person.page.evaluate(
            "performance.getEntriesByName('hearth:channels-rendered')[0]?.startTime ?? -1"))
    assert all(f > 0 for f in figures), figures
    print(f"\nfirst load to the channel list (ms): {[round(f) for f in figures]}")
    assert failed == []

    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(f"{base}/static/app.js",
                            headers={"Accept-Encoding": "gzip"}) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Encoding"] == "gzip"
            assert reply.headers["Cache-Control"] == "no-cache"
            etag = reply.headers["ETag"]
            assert reply.headers["Last-Modified"]
        async with http.get(f"{base}/static/app.js", headers={"If-None-Match": etag}) as reply:
            assert reply.status == 304
        async with http.get(f"{base}/", headers={"Accept-Encoding": "gzip"}) as reply:
            assert reply.status == 200 and reply.headers["Content-Encoding"] == "gzip"
    assert errors == []
