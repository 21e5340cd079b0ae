"""The moderator console (web/mod.html) in headless Chromium against a real ``hearth
serve`` process, real PostgreSQL, and real websocket clients (issue 5).

Moderators log in on the chat page the way a person does and open the console from its
link; the people they moderate are plain gateway clients (tests/helpers.py), so each
test asserts both what the console shows and what actually happened on the wire and in
the server's own API. Every console error or uncaught exception fails the test.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import test_browser as tb
from tests.helpers import GatewayClient, bearer, register
from tests.mod_helpers import Crew, make_crew, rest

expect = tb.expect
browser = tb.browser
"""The Chromium fixture of tests/test_browser.py (same launch flags, fails without it)."""

pytestmark = tb.pytestmark
LIVE_MS = tb.LIVE_MS
SCREENSHOT = "/tmp/hearth-mod-console.png"


class Moderator(tb.Person):
    """A browser person who opens the moderator console from the chat page."""

    async def open_console(self, username: str) -> None:
        await self.login(username)
        link = self.tid("mod-console-link")
        await expect(link).to_be_visible(timeout=LIVE_MS)
        await link.click()
        await self.page.wait_for_url("**/mod?community=*", timeout=LIVE_MS)
        await self.connected()
        await expect(self.tid("feed-state")).to_have_text("live", timeout=LIVE_MS)

    def item(self, where: str, text: str) -> Any:
        """The review item card containing ``text`` in the queue or the feed."""
        root = self.tid("queue-list" if where == "queue" else "feed")
        return root.locator('[data-testid="review-item"]').filter(has_text=text)

    def member(self, user_id: int) -> Any:
        return self.page.locator(f'[data-testid="member-row"][data-user-id="{user_id}"]')

    async def act(self, button: Any, reason: str, *, duration: str | None = None,
                  purge: str | None = None) -> None:
        """Click a one-click action, give the reason (and a duration preset, and for a
        ban what to purge), confirm."""
        await button.click()
        dialog = self.tid("action-dialog")
        await expect(dialog).to_be_visible()
        if duration is not None:
            await self.tid("action-duration").select_option(label=duration)
        if purge is not None:
            await self.tid("action-purge").select_option(label=purge)
        await self.tid("action-reason").fill(reason)
        await self.tid("action-confirm").click()


@pytest.fixture
async def crew_http(hearth_server: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, Crew]]:
    """A community crew on the test's server; the members and the admin are connected
    (the moderators use the console page). Every client is closed afterwards."""
    async with aiohttp.ClientSession() as http:
        crew = await make_crew(http, hearth_server.url, hearth_server.ws_url, members=2,
                               mods=2, connect=False)
        try:
            for person in (*crew.members, crew.admin):
                person.client = await GatewayClient.identified(http, hearth_server.ws_url,
                                                               person.token)
            yield http, crew
        finally:
            for person in crew.everyone():
                if person.client is not None:
                    await person.client.close()


def _username(person: Any) -> str:
    return str(person.reply["user"]["username"])


async def test_console_receives_a_report_and_resolves_it_for_every_moderator(
        browser: Any, hearth_server: Any,
        crew_http: tuple[aiohttp.ClientSession, Crew]) -> None:
    http, crew = crew_http
    errors: list[str] = []
    author, reporter = crew.members
    mod1 = await Moderator.open(browser, hearth_server.url, "mod1", errors)
    mod2 = await Moderator.open(browser, hearth_server.url, "mod2", errors)
    await mod1.open_console(_username(crew.mods[0]))
    await mod2.open_console(_username(crew.mods[1]))
    await expect(mod1.tid("queue-empty")).to_be_visible()

    # A member posts spam; another member reports it over their own websocket.
    sent = await author.ws.ok("send_message", channel_id=crew.general,
                              content="cheap pills at spam.example", nonce="spam-1")
    message_id = sent["message"]["id"]
    reported = await reporter.ws.ok("report_message", channel_id=crew.general,
                                    message_id=message_id, reason="spam link")
    item_id = reported["item"]["id"]

    # The report shows up live, in both consoles' queue and feed.
    for mod in (mod1, mod2):
        queued = mod.item("queue", "cheap pills at spam.example")
        await expect(queued).to_have_count(1, timeout=LIVE_MS)
        await expect(queued).to_have_attribute("data-status", "open")
        await expect(queued).to_contain_text("spam link")
        await expect(mod.item("feed", "cheap pills at spam.example")).to_contain_text(
            "New report", timeout=LIVE_MS)

    # Moderator 1 claims it: moderator 2 sees it claimed at once.
    await mod1.item("queue", "cheap pills").get_by_test_id("action-claim").click()
    await expect(mod2.item("queue", "cheap pills")).to_have_attribute(
        "data-status", "claimed", timeout=LIVE_MS)

    # A dialog without a reason does not send anything.
    await mod1.item("queue", "cheap pills").get_by_test_id("action-delete").click()
    await mod1.tid("action-confirm").click()
    await expect(mod1.tid("action-error")).to_contain_text("reason")
    await mod1.tid("action-cancel").click()
    await expect(mod1.tid("action-dialog")).to_be_hidden()

    # Moderator 1 deletes the message from the queue, with a reason.
    await mod1.act(mod1.item("queue", "cheap pills").get_by_test_id("action-delete"),
                   "spam: pill link")
    await expect(mod1.tid("action-dialog")).to_be_hidden(timeout=LIVE_MS)

    # Everyone viewing the channel got the delete.
    for viewer in (reporter, author, crew.admin):
        deleted = await viewer.ws.event("message_delete", message_id=message_id)
        assert deleted["channel_id"] == crew.general

    # Both consoles show the item resolved, by moderator 1, with the action.
    for mod, by in ((mod1, "you"), (mod2, None)):
        queued = mod.item("queue", "cheap pills")
        await expect(queued).to_have_attribute("data-status", "resolved", timeout=LIVE_MS)
        resolution = queued.get_by_test_id("item-resolution")
        await expect(resolution).to_contain_text("message.delete")
        await expect(resolution).to_contain_text("spam: pill link")
        if by == "you":
            await expect(resolution).to_contain_text("Resolved by you")
        else:
            await expect(resolution).not_to_contain_text("Resolved by you")
        await expect(queued.get_by_test_id("action-delete")).to_have_count(0)
        await expect(mod.item("feed", "cheap pills")).to_have_attribute(
            "data-status", "resolved", timeout=LIVE_MS)
    await expect(mod2.tid("feed").locator('[data-kind="action"]').filter(
        has_text="message.delete")).to_have_count(1, timeout=LIVE_MS)

    # The server agrees: resolved by moderator 1, and the message is gone.
    status, body = await rest(http, hearth_server.url, crew.mod.token,
                              "fetch_review_queue", community_id=crew.community_id,
                              status="resolved")
    assert status == 200, body
    [item] = [i for i in body["items"] if i["id"] == item_id]
    assert item["status"] == "resolved"
    assert item["resolved_by"] == crew.mods[0].id
    assert item["decision"] == "message.delete"
    history = await reporter.ws.ok("fetch_history", channel_id=crew.general, limit=50)
    assert message_id not in [m["id"] for m in history["messages"]]

    # The audit log view has the action, with the reason (live, and when filtered).
    row = mod1.page.locator('[data-testid="audit-row"][data-audit-action="message.delete"]')
    await expect(row).to_have_count(1, timeout=LIVE_MS)
    await expect(row).to_contain_text("spam: pill link")
    await mod2.tid("audit-action").select_option("member.ban")
    await mod2.tid("audit-apply").click()
    await expect(mod2.tid("audit-empty")).to_be_visible(timeout=LIVE_MS)
    await mod2.tid("audit-action").select_option("message.delete")
    await mod2.tid("audit-apply").click()
    row2 = mod2.page.locator('[data-testid="audit-row"]')
    await expect(row2).to_have_count(1, timeout=LIVE_MS)
    await expect(row2).to_contain_text("spam: pill link")

    # The CSV export downloads the same entry.
    async with mod1.page.expect_download() as info:
        await mod1.tid("audit-export").click()
    download = await info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert any(r.get("action") == "message.delete" and r.get("reason") == "spam: pill link"
               for r in rows), rows

    # Two moderators on one item: the second one's resolve is refused, and says why.
    second = await author.ws.ok("send_message", channel_id=crew.general,
                                content="borderline remark", nonce="spam-2")
    await reporter.ws.ok("report_message", channel_id=crew.general,
                         message_id=second["message"]["id"], reason="borderline")
    await mod1.item("queue", "borderline remark").get_by_test_id("action-resolve").click()
    await mod1.tid("action-reason").fill("fine by me")
    await mod2.act(mod2.item("queue", "borderline remark").get_by_test_id("action-resolve"),
                   "looked at it first")
    await expect(mod1.item("queue", "borderline remark")).to_have_attribute(
        "data-status", "resolved", timeout=LIVE_MS)
    await mod1.tid("action-confirm").click()
    await expect(mod1.tid("action-error")).to_have_attribute("data-error-code", "conflict",
                                                            timeout=LIVE_MS)
    await expect(mod1.tid("action-error")).to_have_text(
        "Refused — Someone changed this at the same time. Reload and try again.")
    await mod1.tid("action-cancel").click()
    await expect(mod1.item("queue", "borderline remark").get_by_test_id(
        "item-resolution")).to_contain_text("looked at it first")

    # A second moderator session opened now sees the item resolved (from the server).
    mod3 = await Moderator.open(browser, hearth_server.url, "mod2-again", errors)
    await mod3.open_console(_username(crew.mods[1]))
    await expect(mod3.tid("queue-empty")).to_be_visible(timeout=LIVE_MS)
    await mod3.tid("queue-filter").select_option("resolved")
    await expect(mod3.item("queue", "cheap pills")).to_have_attribute(
        "data-status", "resolved", timeout=LIVE_MS)

    await mod1.page.screenshot(path=SCREENSHOT, full_page=True)
    assert errors == []


async def test_console_member_channel_and_community_tools(
        browser: Any, hearth_server: Any,
        crew_http: tuple[aiohttp.ClientSession, Crew]) -> None:
    http, crew = crew_http
    errors: list[str] = []
    author, other = crew.members
    spam_ids = []
    for i in range(3):
        sent = await author.ws.ok("send_message", channel_id=crew.general,
                                  content=f"spam {i}", nonce=f"s-{i}")
        spam_ids.append(sent["message"]["id"])
    mod = await Moderator.open(browser, hearth_server.url, "mod", errors)
    await mod.open_console(_username(crew.mod))

    # Timeout from the member list with a duration preset: the next send is refused.
    row = mod.member(author.id)
    await expect(row).to_have_count(1, timeout=LIVE_MS)
    await mod.act(row.get_by_test_id("action-timeout"), "cool down", duration="5 minutes")
    await expect(mod.tid("action-dialog")).to_be_hidden(timeout=LIVE_MS)
    sanctioned = await author.ws.event("member_sanctioned")
    assert sanctioned["sanction"]["kind"] == "timeout"
    assert 290_000 <= sanctioned["sanction"]["expires_at"] - sanctioned_now() <= 310_000
    refused = await author.ws.request("send_message", channel_id=crew.general,
                                      content="still here", nonce="t-1")
    assert refused["op"] == "error" and refused["code"] == "timed_out", refused
    timeout_row = mod.page.locator(
        '[data-testid="audit-row"][data-audit-action="member.timeout"]')
    await expect(timeout_row).to_contain_text("cool down", timeout=LIVE_MS)
    await expect(mod.tid("feed").locator('[data-kind="action"]').filter(
        has_text="member.timeout")).to_have_count(1)

    # The member appeals; the appeal shows up live and the moderator accepts it.
    await author.ws.ok("submit_appeal", community_id=crew.community_id,
                       text="I was quoting the rules")
    appeal = mod.tid("appeal-list").get_by_test_id("appeal").filter(
        has_text="I was quoting the rules")
    await expect(appeal).to_have_count(1, timeout=LIVE_MS)
    await mod.act(appeal.get_by_test_id("action-appeal-accept"), "fair enough")
    await expect(mod.tid("action-dialog")).to_be_hidden(timeout=LIVE_MS)
    await expect(appeal).to_have_count(0, timeout=LIVE_MS)
    lifted = await author.ws.event("member_sanctioned", lifted=True)
    assert lifted["sanction"]["kind"] == "timeout"
    back = await author.ws.ok("send_message", channel_id=crew.general,
                              content="back again", nonce="t-2")
    spam_ids.append(back["message"]["id"])

    # Sanctioning someone above you is not offered; someone of your own rank is,
    # and the server's refusal is explained in the dialog, which stays open.
    admin_row = mod.member(crew.admin.id)
    await expect(admin_row.get_by_test_id("action-kick")).to_be_disabled()
    await expect(admin_row.get_by_test_id("action-kick")).to_have_attribute(
        "title", re.compile("above your role"))
    await mod.act(mod.member(crew.mods[1].id).get_by_test_id("action-kick"), "testing")
    await expect(mod.tid("action-error")).to_contain_text("Refused", timeout=LIVE_MS)
    await expect(mod.tid("action-error")).to_have_attribute("data-error-code", "forbidden")
    await expect(mod.tid("action-error")).to_have_text(
        "Refused — You don't have permission to do that.")
    await expect(mod.tid("action-dialog")).to_be_visible()
    await mod.tid("action-cancel").click()
    status, body = await rest(http, hearth_server.url, crew.owner.token, "fetch_audit_log",
                              community_id=crew.community_id, action="member.kick")
    assert status == 200 and body["entries"] == [], body

    # Lock the channel: a member's send is refused; unlock lets them post again.
    await mod.tid("channel-select").select_option(label="#general")
    await mod.act(mod.tid("lock-toggle"), "heated thread")
    await expect(mod.tid("channel-state")).to_contain_text("Locked", timeout=LIVE_MS)
    refused = await other.ws.request("send_message", channel_id=crew.general,
                                     content="let me in", nonce="l-1")
    assert refused["op"] == "error" and refused["code"] == "channel_locked", refused
    await expect(mod.tid("lock-toggle")).to_have_text("Unlock channel")
    await mod.act(mod.tid("lock-toggle"), "calm again")
    await expect(mod.tid("channel-state")).to_contain_text("Open", timeout=LIVE_MS)
    await other.ws.ok("send_message", channel_id=crew.general, content="thanks",
                      nonce="l-2")

    # Slow mode from a preset.
    await mod.tid("slowmode-select").select_option(label="30 seconds")
    await mod.act(mod.tid("slowmode-apply"), "busy day")
    await expect(mod.tid("channel-state")).to_contain_text("slow mode 30 seconds",
                                                           timeout=LIVE_MS)
    async with http.get(f"{hearth_server.url}/api/v1/communities/{crew.community_id}"
                        "/audit-log?action=channel.", headers=bearer(crew.owner.token)) as r:
        entries = (await r.json())["entries"]
    assert [e["action"] for e in entries] == [
        "channel.slowmode", "channel.lock", "channel.lock"], entries

    # A member reports a message from the chat page; it reaches the console live.
    member = await Moderator.open(browser, hearth_server.url, "member", errors)
    await member.login(_username(other))
    await expect(member.tid("mod-console-link")).to_be_hidden()
    await member.page.locator(
        f'[data-testid="channel-link"][data-channel-id="{crew.general}"]').click()
    await expect(member.message("spam 0")).to_have_count(1, timeout=LIVE_MS)
    spam = member.message("spam 0")
    await spam.hover()
    await expect(spam.get_by_test_id("delete-button")).to_have_count(0)
    member.page.once("dialog", lambda dialog: dialog.accept("advertising"))
    await spam.get_by_test_id("report-button").click()
    await expect(member.tid("notice")).to_contain_text("moderators", timeout=LIVE_MS)
    reported = mod.item("queue", "spam 0")
    await expect(reported).to_have_count(1, timeout=LIVE_MS)
    await expect(reported).to_contain_text("advertising")

    # A warning from the console reaches the member's chat page.
    await mod.act(mod.member(other.id).get_by_test_id("action-warn"), "be nice")
    await expect(member.tid("error-text")).to_have_text(
        "A moderator warned you in modtest. Reason: be nice", timeout=LIVE_MS)

    # Delete everything the author posted in the last hour, from their member row:
    # viewers get the bulk delete, the chat page drops them, the item says so.
    await mod.act(mod.member(author.id).get_by_test_id("action-purge-user"),
                  "spam wave", duration="Last hour")
    await expect(mod.tid("notice")).to_contain_text("4 messages deleted", timeout=LIVE_MS)
    gone: set[int] = set()
    while not set(spam_ids) <= gone:
        bulk = await other.ws.event("message_delete_bulk", channel_id=crew.general)
        gone.update(bulk["message_ids"])
    await expect(member.message("spam 0")).to_have_count(0, timeout=LIVE_MS)
    await expect(member.message("thanks")).to_have_count(1)
    await expect(reported.get_by_test_id("item-deleted")).to_be_visible(timeout=LIVE_MS)

    # Community lockdown, one action: joins are paused.
    await mod.act(mod.tid("lockdown-toggle"), "raid")
    await expect(mod.tid("lockdown-state")).to_have_text("on", timeout=LIVE_MS)
    await expect(mod.tid("lockdown-badge")).to_be_visible()
    newcomer = await register(http, hearth_server.url)
    async with http.post(f"{hearth_server.url}/api/v1/invites/{crew.invite}/join",
                         headers=bearer(newcomer["access_token"])) as r:
        assert r.status != 200 and (await r.json())["error"]["code"] == "lockdown"

    # The console offers a plain member nothing.
    await member.page.goto(hearth_server.url + "/mod")
    await expect(member.tid("no-communities")).to_be_visible(timeout=LIVE_MS)
    assert errors == []


async def test_console_automod_hits_raid_signal_and_focus(
        browser: Any, hearth_server: Any,
        crew_http: tuple[aiohttp.ClientSession, Crew]) -> None:
    http, crew = crew_http
    errors: list[str] = []
    author, other = crew.members
    async with http.post(
            f"{hearth_server.url}/api/v1/communities/{crew.community_id}/automod/rules",
            json={"name": "no pills", "trigger": {"type": "keyword", "keywords": ["pills"]},
                  "actions": ["flag", "alert"]},
            headers=bearer(crew.owner.token)) as r:
        assert r.status == 201, await r.text()
    mod = await Moderator.open(browser, hearth_server.url, "mod", errors)
    await mod.open_console(_username(crew.mod))

    # A report arrives and the moderator puts focus on its Claim button.
    first = await other.ws.ok("send_message", channel_id=crew.general,
                              content="a rude remark", nonce="f-1")
    await author.ws.ok("report_message", channel_id=crew.general,
                       message_id=first["message"]["id"], reason="rude")
    claim = mod.item("queue", "a rude remark").get_by_test_id("action-claim")
    await claim.focus()

    # Automod flags a message and alerts: both show up live; the focus stays put.
    flagged = await author.ws.ok("send_message", channel_id=crew.general,
                                 content="buy pills here", nonce="f-2")
    item = mod.item("queue", "buy pills here")
    await expect(item).to_have_count(1, timeout=LIVE_MS)
    await expect(item).to_contain_text("automod:no pills")
    alert = mod.tid("feed").locator('[data-kind="automod"]').filter(has_text="no pills")
    await expect(alert).to_have_count(1, timeout=LIVE_MS)
    await expect(claim).to_be_focused()

    # The moderator times the author out from the flagged item: it is resolved with
    # the action as its decision, and the author cannot post.
    await mod.act(item.get_by_test_id("action-timeout"), "selling pills",
                  duration="10 minutes")
    await expect(item).to_have_attribute("data-status", "resolved", timeout=LIVE_MS)
    await expect(item.get_by_test_id("item-resolution")).to_contain_text("member.timeout")
    refused = await author.ws.request("send_message", channel_id=crew.general,
                                      content="more pills", nonce="f-3")
    assert refused["op"] == "error" and refused["code"] == "timed_out", refused
    status, body = await rest(http, hearth_server.url, crew.mod.token, "fetch_review_queue",
                              community_id=crew.community_id, status="resolved")
    assert status == 200, body
    [resolved] = [i for i in body["items"]
                  if i["message_id"] == flagged["message"]["id"]]
    assert resolved["decision"] == "member.timeout"
    assert resolved["resolved_by"] == crew.mod.id

    # A spike of joins raises a raid signal; lockdown is one click from the feed.
    for _ in range(20):
        newcomer = await register(http, hearth_server.url)
        async with http.post(f"{hearth_server.url}/api/v1/invites/{crew.invite}/join",
                             headers=bearer(newcomer["access_token"])) as r:
            assert r.status == 200, await r.text()
    raid = mod.tid("feed").locator('[data-kind="raid"]')
    await expect(raid).to_contain_text("joins", timeout=LIVE_MS)
    await mod.act(raid.get_by_test_id("action-lockdown"), "join raid")
    await expect(mod.tid("lockdown-state")).to_have_text("on", timeout=LIVE_MS)
    update = await other.ws.event("community_moderation_update")
    assert update["lockdown"] is True

    # A reload reads the lockdown from the server, not from the page's memory.
    await mod.page.reload()
    await mod.connected()
    await expect(mod.tid("lockdown-state")).to_have_text("on", timeout=LIVE_MS)

    assert errors == []


async def test_console_dismiss_audit_paging_filters_and_resume(
        browser: Any, hearth_server: Any,
        crew_http: tuple[aiohttp.ClientSession, Crew]) -> None:
    http, crew = crew_http
    errors: list[str] = []
    author, other = crew.members
    mod = await Moderator.open(browser, hearth_server.url, "mod", errors)
    await mod.open_console(_username(crew.mod))

    # The socket drops; the console resumes and the feed is still live.
    session_id = await mod.page.evaluate("window.hearthMod.gw.sessionId")
    await mod.page.evaluate("window.hearthMod.dropConnection()")
    await expect(mod.tid("connection-status")).to_contain_text("reconnecting")
    sent = await author.ws.ok("send_message", channel_id=crew.general,
                              content="a harmless joke", nonce="d-1")
    await other.ws.ok("report_message", channel_id=crew.general,
                      message_id=sent["message"]["id"], reason="not funny")
    await mod.connected()
    assert await mod.page.evaluate("window.hearthMod.gw.sessionId") == session_id
    item = mod.item("queue", "a harmless joke")
    await expect(item).to_have_count(1, timeout=LIVE_MS)

    # A resume the server refuses falls back to a fresh identify: the feed keeps
    # what it showed, subscribes again, and stays live.
    await mod.page.evaluate("window.hearthMod.gw.sessionId = 'no-such-session'")
    await mod.page.evaluate("window.hearthMod.dropConnection()")
    await mod.connected()
    await expect(mod.tid("feed-state")).to_have_text("live", timeout=LIVE_MS)
    assert await mod.page.evaluate("window.hearthMod.gw.sessionId") not in (
        session_id, "no-such-session")
    await expect(mod.item("feed", "a harmless joke")).to_have_count(1)
    later = await author.ws.ok("send_message", channel_id=crew.general,
                               content="another joke", nonce="d-2")
    await other.ws.ok("report_message", channel_id=crew.general,
                      message_id=later["message"]["id"], reason="still not funny")
    await expect(mod.item("feed", "another joke")).to_have_count(1, timeout=LIVE_MS)

    # Dismissed with a decision and a reason: the message stays.
    await item.get_by_test_id("action-resolve").click()
    await mod.tid("action-decision").select_option("dismissed")
    await mod.tid("action-reason").fill("it is a joke")
    await mod.tid("action-confirm").click()
    await expect(item).to_have_attribute("data-status", "resolved", timeout=LIVE_MS)
    await expect(item.get_by_test_id("item-resolution")).to_contain_text(
        "dismissed — it is a joke")
    history = await other.ws.ok("fetch_history", channel_id=crew.general, limit=10)
    assert sent["message"]["id"] in [m["id"] for m in history["messages"]]

    # Another moderator's actions (here the admin's, over REST) appear live.
    for i in range(55):
        status, body = await rest(http, hearth_server.url, crew.admin.token, "warn_member",
                                  community_id=crew.community_id, user_id=author.id,
                                  reason=f"warning {i:02d}")
        assert status == 200, body
    status, body = await rest(http, hearth_server.url, crew.admin.token, "warn_member",
                              community_id=crew.community_id, user_id=other.id,
                              reason="a warning for someone else")
    assert status == 200, body
    warn_rows = mod.page.locator('[data-testid="audit-row"][data-audit-action="member.warn"]')
    await expect(warn_rows.filter(has_text="warning 54")).to_have_count(1, timeout=LIVE_MS)
    await expect(mod.tid("feed").locator('[data-kind="action"]').filter(
        has_text="warning 54")).to_have_count(1)

    # Filter by moderator and member: only the admin's warnings of the author, a
    # page of 50, then the rest.
    await mod.tid("audit-actor").select_option(str(crew.admin.id))
    await mod.tid("audit-target").select_option(str(author.id))
    await mod.tid("audit-apply").click()
    rows = mod.tid("audit-table").get_by_test_id("audit-row")
    await expect(rows).to_have_count(50, timeout=LIVE_MS)
    await expect(rows.first).to_contain_text("warning 54")
    await mod.tid("audit-more").click()
    await expect(rows).to_have_count(55, timeout=LIVE_MS)
    await expect(rows.last).to_contain_text("warning 00")
    await expect(mod.tid("audit-more")).to_be_hidden()

    # A date range that ends before today finds nothing.
    await mod.tid("audit-actor").select_option("")
    await mod.tid("audit-target").select_option("")
    await mod.tid("audit-until").fill("2020-01-01")
    await mod.tid("audit-apply").click()
    await expect(mod.tid("audit-empty")).to_be_visible(timeout=LIVE_MS)
    await expect(rows).to_have_count(0)

    # The queue pages too: 52 automod flags and the open report, 50 at a time.
    async with http.post(
            f"{hearth_server.url}/api/v1/communities/{crew.community_id}/automod/rules",
            json={"name": "flag it", "trigger": {"type": "keyword", "keywords": ["flagme"]},
                  "actions": ["flag"]}, headers=bearer(crew.owner.token)) as r:
        assert r.status == 201, await r.text()
    for i in range(52):
        await author.ws.ok("send_message", channel_id=crew.general,
                           content=f"flagme {i:02d}", nonce=f"q-{i}")
    await mod.page.reload()
    await mod.connected()
    queue = mod.tid("queue-list").get_by_test_id("review-item")
    await expect(queue).to_have_count(50, timeout=LIVE_MS)
    await expect(queue.first).to_contain_text("flagme 51")
    await mod.tid("queue-more").click()
    await expect(queue).to_have_count(53, timeout=LIVE_MS)
    await expect(queue.last).to_contain_text("another joke")
    await expect(mod.tid("queue-more")).to_be_hidden()
    assert errors == []


async def test_console_follows_role_changes_live(
        browser: Any, hearth_server: Any,
        crew_http: tuple[aiohttp.ClientSession, Crew]) -> None:
    http, crew = crew_http
    errors: list[str] = []
    member = crew.members[1]
    page = await Moderator.open(browser, hearth_server.url, "member", errors)
    await page.login(_username(member))
    await page.page.locator(
        f'[data-testid="channel-link"][data-channel-id="{crew.general}"]').click()
    await expect(page.tid("mod-console-link")).to_be_hidden()

    async def set_role(role: str) -> None:
        async with http.patch(
                f"{hearth_server.url}/api/v1/communities/{crew.community_id}/members/"
                f"{member.id}", json={"role": role}, headers=bearer(crew.owner.token)) as r:
            assert r.status == 200, await r.text()

    # Promoted: the link appears without a reload, and the console works.
    await set_role("moderator")
    await expect(page.tid("mod-console-link")).to_be_visible(timeout=LIVE_MS)
    await expect(page.tid("mod-console-link")).to_have_attribute(
        "href", f"/mod?community={crew.community_id}")
    await page.tid("mod-console-link").click()
    await page.connected()
    await expect(page.tid("feed-state")).to_have_text("live", timeout=LIVE_MS)
    await expect(page.tid("action-dialog")).to_be_hidden()
    await expect(page.member(crew.members[0].id).get_by_test_id("action-ban")).to_be_disabled()
    await expect(page.member(crew.members[0].id).get_by_test_id("action-kick")).to_be_enabled()

    # Promoted again (admin): ban becomes available at once.
    await set_role("admin")
    await expect(page.member(crew.members[0].id).get_by_test_id("action-ban")).to_be_enabled(
        timeout=LIVE_MS)

    # As admin: ban for a day with a day's purge; the member is out at once and their
    # messages are gone; the audit log offers the unban, which lets them back in.
    victim = crew.members[0]
    sent = await victim.ws.ok("send_message", channel_id=crew.general,
                              content="ban-worthy", nonce="b-1")
    await page.act(page.member(victim.id).get_by_test_id("action-ban"), "repeated spam",
                   duration="1 day", purge="Day")
    await expect(page.tid("action-dialog")).to_be_hidden(timeout=LIVE_MS)
    gone = await victim.ws.event("community_unavailable", community_id=crew.community_id)
    assert gone["sanction"]["kind"] == "ban"
    assert gone["sanction"]["reason"] == "repeated spam"
    assert 86_000_000 <= gone["sanction"]["expires_at"] - sanctioned_now() <= 86_500_000
    await expect(page.tid("notice")).to_contain_text("1 message deleted", timeout=LIVE_MS)
    await expect(page.member(victim.id)).to_have_count(0, timeout=LIVE_MS)
    ban_row = page.page.locator('[data-testid="audit-row"][data-audit-action="member.ban"]')
    await expect(ban_row).to_contain_text("repeated spam", timeout=LIVE_MS)
    await page.act(ban_row.get_by_test_id("action-unban"), "second chance")
    unban_row = page.page.locator(
        '[data-testid="audit-row"][data-audit-action="member.unban"]')
    await expect(unban_row).to_contain_text("second chance", timeout=LIVE_MS)
    async with http.post(f"{hearth_server.url}/api/v1/invites/{crew.invite}/join",
                         headers=bearer(victim.token)) as r:
        assert r.status == 200, await r.text()
    history = await crew.admin.ws.ok("fetch_history", channel_id=crew.general, limit=20)
    assert sent["message"]["id"] not in [m["id"] for m in history["messages"]]

    # Kick (a moderator, below an admin): removed from the list at once.
    await page.act(page.member(crew.mods[0].id).get_by_test_id("action-kick"), "inactive")
    await expect(page.member(crew.mods[0].id)).to_have_count(0, timeout=LIVE_MS)
    status, body = await rest(http, hearth_server.url, crew.owner.token, "fetch_audit_log",
                              community_id=crew.community_id, action="member.kick")
    assert status == 200 and [e["target_id"] for e in body["entries"]] == [
        crew.mods[0].id], body

    # Demoted: the console has nothing left to offer, at once.
    await set_role("member")
    await expect(page.tid("no-communities")).to_be_visible(timeout=LIVE_MS)
    await expect(page.tid("console")).to_be_hidden()
    assert errors == []


def sanctioned_now() -> int:
    """Now in milliseconds since the epoch (the server runs on this machine's clock)."""
    return int(time.time() * 1000)
