"""One sign-in per browser (web/session.js, server/api_web_auth.py) and the shared header
(web/shell.js), in headless Chromium against a real ``hearth serve``.

A browser restart is a new browser context made from the first one's storage state
(its cookies, the HttpOnly refresh cookie included, and its local storage): the page
signs in from the cookie alone. /mod and /voice opened in new tabs need no second
sign-in; sign out everywhere from one tab ends the other tabs' sessions at once and the
other "device"'s (another context signed in as the same person) at its next refresh.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_browser as tb

expect = tb.expect
browser = tb.browser
pytestmark = tb.pytestmark
LIVE_MS = tb.LIVE_MS
SCREENSHOT = "/tmp/hearth-session.png"


async def new_tab(context: Any, url: str, name: str, errors: list[str]) -> tb.Person:
    person = tb.Person(await context.new_page(), name, errors)
    await person.page.goto(url)
    return person


async def test_sign_in_survives_a_restart_and_serves_every_page(
        browser: Any, hearth_server: Any, tmp_path: Any) -> None:
    errors: list[str] = []
    first = await tb.Person.open(browser, hearth_server.url, "first", errors)
    await first.register("rosa", "Rosa")
    # No credential is readable by a script: the refresh token is an HttpOnly cookie.
    assert await first.page.evaluate("document.cookie.includes('hearth_refresh')") is False
    stored = await first.page.evaluate(
        "Object.values(localStorage).concat(Object.values(sessionStorage)).join(' ')")
    assert "hr." not in stored and "eyJ" not in stored  # no refresh token, no JWT
    state = str(tmp_path / "state.json")
    await first.page.context.storage_state(path=state)
    await first.page.context.close()

    # The browser restarts: the same cookies, a new process's memory.
    context = await browser.new_context(storage_state=state,
                                        viewport={"width": 1180, "height": 740})
    chat = await new_tab(context, hearth_server.url + "/", "chat", errors)
    await chat.connected()
    await expect(chat.tid("auth-view")).to_be_hidden()
    await expect(chat.tid("shell-user-name")).to_have_text("Rosa")
    await expect(chat.tid("nav-chat")).to_have_attribute("aria-current", "page")

    # The first account of this install owns the starter community: the header offers
    # moderation and settings. A new tab opens the console with no sign-in.
    await expect(chat.tid("nav-mod")).to_be_visible(timeout=LIVE_MS)
    await expect(chat.tid("nav-settings")).to_be_visible()
    mod = await new_tab(context, hearth_server.url + "/mod", "mod", errors)
    await mod.connected()
    await expect(mod.tid("feed-state")).to_have_text("live", timeout=LIVE_MS)
    await expect(mod.tid("signed-out")).to_be_hidden()
    await expect(mod.tid("nav-mod")).to_have_attribute("aria-current", "page")

    voice = await new_tab(context, hearth_server.url + "/voice", "voice", errors)
    await voice.connected()
    await expect(voice.tid("auth-view")).to_be_hidden()
    await expect(voice.tid("shell-user-name")).to_have_text("Rosa")

    # Another device (its own cookies) signed in as Rosa too.
    device = await tb.Person.open(browser, hearth_server.url, "device", errors)
    await device.login("rosa")

    # Sign out everywhere from the voice tab's user menu.
    await voice.tid("user-menu-button").click()
    await expect(voice.tid("user-menu")).to_be_visible()
    await expect(voice.tid("user-menu-who")).to_contain_text("@rosa")
    await voice.page.screenshot(path=SCREENSHOT)
    await voice.tid("sign-out-everywhere").click()
    await expect(voice.tid("auth-view")).to_be_visible(timeout=LIVE_MS)
    # The other tabs of this browser follow at once (no reload).
    await expect(chat.tid("auth-view")).to_be_visible(timeout=LIVE_MS)
    await expect(chat.tid("auth-error")).to_have_text("You signed out everywhere.")
    await expect(mod.tid("signed-out")).to_be_visible(timeout=LIVE_MS)
    await expect(chat.tid("user-menu-button")).to_be_hidden()
    # The other device's sign-in is revoked: its next page load asks to sign in again.
    await device.page.reload()
    await expect(device.tid("auth-view")).to_be_visible(timeout=LIVE_MS)
    # And this browser stays signed out after a reload, too.
    await chat.page.reload()
    await expect(chat.tid("auth-view")).to_be_visible(timeout=LIVE_MS)

    # Signing in on one tab signs the other tabs in.
    await chat.login("rosa")
    await expect(voice.tid("shell-user-name")).to_have_text("Rosa", timeout=LIVE_MS)
    await voice.connected()
    await expect(voice.tid("auth-view")).to_be_hidden()
    await mod.connected()
    await expect(mod.tid("signed-out")).to_be_hidden()
    # The 401 of the other device's refused refresh is the expected console error here.
    assert [e for e in errors if "401" not in e] == []


async def test_plain_sign_out_and_the_signed_out_pages(browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    person = await tb.Person.open(browser, hearth_server.url, "ines", errors)
    await person.register("ines", "Ines")
    settings = await new_tab(person.page.context, hearth_server.url + "/settings",
                             "settings", errors)
    await expect(settings.tid("settings")).to_be_visible(timeout=LIVE_MS)
    await settings.tid("user-menu-button").click()
    await settings.tid("sign-out").click()
    await expect(settings.tid("signed-out")).to_be_visible(timeout=LIVE_MS)
    await expect(person.tid("auth-view")).to_be_visible(timeout=LIVE_MS)
    # A signed-out page links to the sign-in, which brings the person back.
    await settings.tid("sign-in-link").click()
    await settings.page.wait_for_url("**/?next=/settings")
    await settings.tid("auth-username").fill("ines")
    await settings.tid("auth-password").fill(tb.PASSWORD)
    await settings.tid("login-button").click()
    await settings.page.wait_for_url("**/settings?community=*", timeout=LIVE_MS)
    await expect(settings.tid("settings")).to_be_visible(timeout=LIVE_MS)
    assert errors == []


@pytest.mark.parametrize("path", ["/mod", "/voice", "/settings"])
async def test_pages_without_a_sign_in_say_so(browser: Any, hearth_server: Any,
                                              path: str) -> None:
    errors: list[str] = []
    context = await browser.new_context()
    page = await new_tab(context, hearth_server.url + path, "anon", errors)
    target = "auth-view" if path == "/voice" else "signed-out"
    await expect(page.tid(target)).to_be_visible(timeout=LIVE_MS)
    await expect(page.tid("user-menu-button")).to_be_hidden()
    assert errors == []
