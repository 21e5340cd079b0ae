"""An owner sets up a new community from the settings page only (web/settings.html), in
headless Chromium against a real ``hearth serve``; a member connected over the gateway
(and REST) sees every effect as any member would.

The owner creates the community on the chat page, then, on /settings: channels (one
tier-gated), a category, a private channel, a voice room, a role with a channel
override, gives the role to the member, an automod rule, invites (one revoked), a
reordering, and a live session whose stage the owner starts from the page and whose
attendance the page shows.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests import test_browser as tb
from tests.helpers import GatewayClient, bearer, register

expect = tb.expect
browser = tb.browser
pytestmark = tb.pytestmark
LIVE_MS = tb.LIVE_MS
SCREENSHOT = "/tmp/hearth-settings.png"


class Owner(tb.Person):
    def channel_row(self, name: str) -> Any:
        return self.page.locator(f'[data-testid="channel-row"][data-channel-name="{name}"]')

    async def create_channel(self, name: str, kind: str = "text", *, private: bool = False,
                             tier: int = 0, parent: str | None = None) -> None:
        await self.tid("channel-name").fill(name)
        await self.tid("channel-kind").select_option(kind)
        if parent:
            await self.tid("channel-parent").select_option(label=parent)
        await self.tid("channel-tier").fill(str(tier))
        if private:
            await self.tid("channel-private").check()
        await self.tid("channel-create").click()
        await expect(self.channel_row(name)).to_have_count(1, timeout=LIVE_MS)


async def rest(http: aiohttp.ClientSession, method: str, url: str, token: str,
               body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, headers=bearer(token), json=body) as reply:
        text = await reply.text()
        return reply.status, (await reply.json() if text else None)


async def test_owner_sets_up_a_community_from_the_settings_page(
        browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    base = f"{hearth_server.url}/api/v1"
    owner = await Owner.open(browser, hearth_server.url, "owner", errors)
    await owner.register("olga", "Olga")
    await owner.tid("new-community-name").fill("Pottery Club")
    await owner.tid("create-community-button").click()
    await expect(owner.tid("channel-title")).to_have_text("# general", timeout=LIVE_MS)
    community_id = int(await owner.page.locator('[data-testid="community"]').filter(
        has_text="Pottery Club").get_attribute("data-community-id"))

    # The header takes the owner to the settings of the community they are in.
    await expect(owner.tid("nav-settings")).to_have_attribute(
        "href", f"/settings?community={community_id}", timeout=LIVE_MS)
    await owner.tid("nav-settings").click()
    await owner.page.wait_for_url(f"**/settings?community={community_id}")
    await expect(owner.tid("settings-title")).to_have_text("Pottery Club settings",
                                                           timeout=LIVE_MS)

    # Community name.
    await owner.tid("community-name").fill("Pottery Circle")
    await owner.tid("community-description").fill("Wheels, kilns and glazes.")
    await owner.tid("community-save").click()
    await expect(owner.tid("settings-title")).to_have_text("Pottery Circle settings",
                                                           timeout=LIVE_MS)

    # Channels: a category with a channel in it, a private one, a tier-gated one, a voice room.
    await owner.create_channel("Workshop", "category")
    await owner.create_channel("glazes", parent="Workshop")
    await owner.create_channel("staff-room", private=True)
    await owner.create_channel("masterclass", tier=2)
    await owner.create_channel("studio", "voice")
    await expect(owner.channel_row("staff-room")).to_contain_text("private")
    await expect(owner.channel_row("masterclass")).to_contain_text("tier 2")
    # The voice room moves up twice, above the private and the tier-gated channel; a
    # category's channels stay under it.
    rows = owner.page.locator('[data-testid="channel-row"]')
    for expected in (4, 3):
        await owner.channel_row("studio").get_by_role("button", name="Move studio up").click()
        await expect(rows.nth(expected)).to_have_attribute("data-channel-name", "studio",
                                                           timeout=LIVE_MS)
    await expect(rows).to_have_count(6)
    order = [await rows.nth(i).get_attribute("data-channel-name") for i in range(6)]
    assert order == ["general", "Workshop", "glazes", "studio", "staff-room", "masterclass"]

    # Invites: two, one revoked.
    await owner.tid("invite-create").click()
    await expect(owner.page.locator('[data-testid="invite-row"]')).to_have_count(1,
                                                                                timeout=LIVE_MS)
    await owner.tid("invite-uses").select_option("1")
    await owner.tid("invite-create").click()
    invites = owner.page.locator('[data-testid="invite-row"]')
    await expect(invites).to_have_count(2, timeout=LIVE_MS)
    revoked = await invites.nth(0).get_attribute("data-code")  # newest first: the 1-use one
    kept = await invites.nth(1).get_attribute("data-code")
    await invites.nth(0).get_by_test_id("invite-revoke").click()
    await expect(invites).to_have_count(1, timeout=LIVE_MS)

    async with aiohttp.ClientSession() as http:
        member = await register(http, hearth_server.url, "mia")
        token, member_id = member["access_token"], member["user"]["id"]
        status, body = await rest(http, "POST", f"{base}/invites/{revoked}/join", token)
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await rest(http, "POST", f"{base}/invites/{kept}/join", token)
        assert status == 200, body
        watcher = await GatewayClient.identified(http, hearth_server.ws_url, token)
        try:
            await check_member_view(owner, http, watcher, base, token, member_id,
                                    community_id)
        finally:
            await watcher.close()
    await owner.page.screenshot(path=SCREENSHOT, full_page=True)
    assert errors == []


async def check_member_view(owner: Owner, http: aiohttp.ClientSession,
                            watcher: GatewayClient, base: str, token: str, member_id: int,
                            community_id: int) -> None:
    ready = watcher.hello  # noqa: F841 - identified already; read the community afresh
    status, body = await rest(http, "GET", f"{base}/communities", token)
    assert status == 200
    [snap] = [c for c in body["communities"] if c["community"]["id"] == community_id]
    assert snap["community"]["name"] == "Pottery Circle"
    assert snap["community"]["description"] == "Wheels, kilns and glazes."
    names = [c["name"] for c in sorted(snap["channels"], key=lambda c: (c["position"], c["id"]))
             if c["kind"] != "thread"]
    # The member sees the public channels in the owner's order, not the private or
    # tier-gated ones.
    assert names == ["general", "Workshop", "glazes", "studio"], names
    glazes = next(c for c in snap["channels"] if c["name"] == "glazes")
    workshop = next(c for c in snap["channels"] if c["name"] == "Workshop")
    assert glazes["parent_id"] == workshop["id"]
    assert next(c for c in snap["channels"] if c["name"] == "studio")["kind"] == "voice"

    # A role with a channel override: "apprentice" may not post in #glazes.
    await owner.page.reload()  # the member list now has Mia
    await owner.tid("role-name").fill("apprentice")
    await owner.tid("role-perm-ATTACH_FILES").check()
    await owner.tid("role-create").click()
    await expect(owner.page.locator('[data-testid="role-row"][data-role-name="apprentice"]')
                 ).to_have_count(1, timeout=LIVE_MS)
    await owner.tid("member-select").select_option(label="mia (@mia)")
    await owner.tid("member-role-select").select_option(label="apprentice")
    await owner.tid("member-role-give").click()
    await expect(owner.tid("notice")).to_contain_text("has the role now", timeout=LIVE_MS)
    await owner.tid("override-channel").select_option(label="# glazes")
    await owner.tid("override-target").select_option(label="apprentice")
    await owner.tid("override-bit-SEND_MESSAGES").select_option("deny")
    await owner.tid("override-save").click()
    await expect(owner.page.locator('[data-testid="override-row"]')).to_contain_text(
        "deny: Send messages", timeout=LIVE_MS)
    reply = await watcher.request("send_message", channel_id=glazes["id"], content="hello")
    assert (reply["op"], reply.get("code")) == ("error", "forbidden"), reply
    general = next(c for c in snap["channels"] if c["name"] == "general")
    await watcher.ok("send_message", channel_id=general["id"], content="hello everyone")

    # An automod rule: messages with "spoiler" are blocked.
    await owner.tid("rule-name").fill("no spoilers")
    await owner.tid("rule-keywords").fill("spoiler")
    await owner.tid("rule-create").click()
    await expect(owner.page.locator('[data-testid="rule-row"][data-rule-name="no spoilers"]')
                 ).to_have_count(1, timeout=LIVE_MS)
    reply = await watcher.request("send_message", channel_id=general["id"],
                                  content="big spoiler ahead")
    assert (reply["op"], reply.get("code")) == ("error", "automod_blocked"), reply

    # A live session: scheduling creates its stage; the host starts it from the page and
    # the member sees it go live; the page shows its attendance.
    await owner.tid("live-title").fill("Wheel throwing Q&A")
    starts = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 3600))
    await owner.tid("live-starts").fill(starts)
    await owner.tid("live-create").click()
    row = owner.page.locator('[data-testid="live-row"][data-title="Wheel throwing Q&A"]')
    await expect(row).to_have_attribute("data-state", "scheduled", timeout=LIVE_MS)
    created = await watcher.event("live_session_update")
    stage_id = created["session"]["channel_id"]
    await expect(owner.channel_row("Wheel throwing Q&A")).to_have_count(1, timeout=LIVE_MS)
    await row.get_by_test_id("live-start").click()
    await expect(row).to_have_attribute("data-state", "live", timeout=LIVE_MS)
    live = await watcher.event("live_session_update", timeout=LIVE_MS / 1000)
    while live["session"]["state"] != "live":
        live = await watcher.event("live_session_update", timeout=LIVE_MS / 1000)
    assert live["session"]["channel_id"] == stage_id
    status, body = await rest(http, "GET", f"{base}/communities/{community_id}/live-sessions"
                              f"/{live['session']['id']}", token)
    assert status == 200 and body["session"]["state"] == "live"
    await row.get_by_test_id("live-end").click()
    await expect(row).to_have_attribute("data-state", "ended", timeout=LIVE_MS)
    await row.get_by_test_id("live-attendance").click()
    await expect(owner.tid("attendance-summary")).to_contain_text("attended", timeout=LIVE_MS)

    # The private channel reaches nobody but the owner; the member never got it.
    status, body = await rest(http, "GET", f"{base}/communities", token)
    [snap] = [c for c in body["communities"] if c["community"]["id"] == community_id]
    assert "staff-room" not in {c["name"] for c in snap["channels"]}
    assert "masterclass" not in {c["name"] for c in snap["channels"]}
    assert snap["community"]["name"] == "Pottery Circle" and snap["role"] == "member"
    assert member_id in {m["user"]["id"] for m in (await rest(
        http, "GET", f"{base}/communities/{community_id}/members", token))[1]["members"]}
