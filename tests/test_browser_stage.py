"""The stage page (web/voice.html on a stage channel) and the chat page's voice links, in
headless Chromium against a real ``hearth serve`` process and PostgreSQL.

What a host and an audience member do with a live session from the page itself: the
schedule shows the start time in the viewer's locale and time zone, the host starts the
session with the page's Start button (from the keyboard), the audience sees it go live,
raises a hand, is invited to speak, is muted and unmuted by the host, the host ends it
and reads the attendance. Also: the chat page links voice and stage channels to the
voice page of the right community, and the stage page fits a phone-sized screen. Every
console error fails a test; waits are on conditions, never fixed sleeps.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from tests import test_browser as tb
from tests import test_browser_voice as tv
from tests.a11y import Audit
from tests.helpers import bearer, register
from tests.test_browser import browser  # noqa: F401  (a plain Chromium)
from tests.test_browser_voice import launch  # noqa: F401  (Chromiums with fake microphones)

expect = tb.expect
pytestmark = tv.pytestmark

ZONE = "Asia/Kolkata"
"""A +05:30 zone: a page that printed UTC or the server's zone would show other minutes."""
LOCALE = "en-GB"
PHONE = {"width": 390, "height": 844}


async def _schedule(http: aiohttp.ClientSession, base: str, token: str, cid: int,
                    starts_at: int, **extra: Any) -> dict[str, Any]:
    """A live session scheduled through the REST API (the test's setup, not the page)."""
    async with http.post(f"{base}/api/v1/communities/{cid}/live-sessions", json={
            "title": "Office hours", "starts_at": starts_at,
            "description": "Bring questions", **extra}, headers=bearer(token)) as reply:
        assert reply.status == 201, await reply.text()
        return dict((await reply.json())["session"])


async def _open(chromium: Any, url: str, name: str, errors: list[str],
                viewport: dict[str, int] | None = None) -> tv.Listener:
    """A person on ``url`` in their own context, in Kolkata time with British English."""
    context = await chromium.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                        locale=LOCALE, timezone_id=ZONE)
    person = tv.Listener(await context.new_page(), name, errors)
    await person.page.goto(url)
    return person


def _local_hhmm(ms: int) -> str:
    """The clock time en-GB prints for ``ms`` in ZONE (24-hour, hour not zero-padded)."""
    local = datetime.fromtimestamp(ms / 1000, ZoneInfo(ZONE))
    return f"{local.hour}:{local.minute:02d}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_host_runs_a_session_from_the_stage_page(
        launch: tv.Launcher, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    errors: list[str] = []
    base = hearth_server.url
    # Two hours ahead, on a whole minute: the page must print it in the viewer's zone.
    starts_at = (int(time.time()) // 60 + 120) * 60_000
    async with aiohttp.ClientSession() as http:
        world = await tv._setup(http, base, "alice")
        accounts = world["accounts"]
        cid = world["community_id"]
        session = await _schedule(http, base, accounts["owner"]["access_token"], cid,
                                  starts_at, capacity=20,
                                  prerequisite_course="Intro to Hearth")
    host_id, alice_id = tv._uid(accounts["owner"]), tv._uid(accounts["alice"])
    stage_url = f"{base}/voice?community={cid}&channel={session['channel_id']}"

    host = await _open(await launch(tv.BOT_HZ), stage_url, "host", errors)
    await host.login(tv._username(accounts["owner"]))
    alice = await _open(await launch(tv.ALICE_HZ), stage_url, "alice", errors)
    await alice.login(tv._username(accounts["alice"]))

    # Both land on the stage named in the address: the session, its start time in their
    # own zone (machine-readable too), capacity, prerequisites, and the schedule entry.
    for person in (host, alice):
        await expect(person.tid("room-title")).to_have_text("Office hours", timeout=tb.LIVE_MS)
        await expect(person.tid("session-state")).to_have_attribute("data-state", "scheduled")
        start = person.tid("session-start")
        await expect(start).to_have_attribute("datetime", _iso(starts_at))
        await expect(start).to_contain_text(_local_hhmm(starts_at))
        await expect(person.tid("session-prerequisites")).to_have_text("course: Intro to Hearth")
        item = person.page.locator(
            f'[data-testid="schedule-item"][data-session-id="{session["id"]}"]')
        await expect(item.get_by_test_id("schedule-time")).to_contain_text(_local_hhmm(starts_at))
    # Only the host gets the host controls; the audience can register for a seat.
    await expect(host.tid("start-button")).to_be_visible()
    await expect(alice.tid("host-controls")).to_be_hidden()
    await alice.tid("register-button").click()
    await expect(alice.tid("register-button")).to_have_attribute("aria-pressed", "true",
                                                                 timeout=tb.LIVE_MS)
    await expect(alice.tid("session-capacity")).to_have_text("1 of 20 seats taken",
                                                             timeout=tb.LIVE_MS)

    # The host starts it from the keyboard; the audience sees it go live.
    await host.tid("start-button").focus()
    await host.page.keyboard.press("Enter")
    await expect(host.tid("session-state")).to_have_attribute("data-state", "live",
                                                              timeout=tb.LIVE_MS)
    await expect(alice.tid("session-state")).to_have_attribute("data-state", "live",
                                                               timeout=tb.LIVE_MS)
    await expect(alice.tid("session-announce")).to_contain_text("live")
    await expect(host.tid("end-button")).to_be_visible()
    await expect(host.tid("start-button")).to_be_hidden()

    for person in (host, alice):
        await person.enter(cid, "Office hours")
    await expect(host.participant(alice_id)).to_have_attribute("data-role", "listener",
                                                               timeout=tb.LIVE_MS)

    # Alice raises her hand; the host takes it: she is a speaker now.
    await alice.tid("hand-button").click()
    hand = host.page.locator(f'[data-testid="hand"][data-user-id="{alice_id}"]')
    await expect(hand).to_have_count(1, timeout=tb.LIVE_MS)
    await hand.get_by_test_id("promote-button").click()
    await expect(host.participant(alice_id)).to_have_attribute("data-role", "speaker",
                                                               timeout=tb.LIVE_MS)
    await expect(alice.tid("hand-button")).to_be_hidden(timeout=tb.LIVE_MS)
    await axe(host.page, "the stage page, host view, live")
    await axe(alice.page, "the stage page, audience view, live")

    # The host mutes her for everyone and lifts it again, from the keyboard; her page
    # shows both. The list re-renders on every event, and focus stays on the button.
    mute = host.participant(alice_id).get_by_test_id("server-mute-button")
    await mute.focus()
    await host.page.keyboard.press("Enter")
    await expect(alice.participant(alice_id).get_by_test_id("badge-server-mute")).to_have_count(
        1, timeout=tb.LIVE_MS)
    await expect(alice.tid("voice-status")).to_have_text("A moderator muted you.")
    await expect(mute).to_contain_text("Lift mute", timeout=tb.LIVE_MS)
    await expect(mute).to_be_focused()
    await host.page.keyboard.press("Enter")
    await expect(alice.participant(alice_id).get_by_test_id("badge-server-mute")).to_have_count(
        0, timeout=tb.LIVE_MS)

    # The host makes her co-host: her page offers the host controls; and takes it back.
    cohost = host.participant(alice_id).get_by_test_id("cohost-button")
    await cohost.click()
    await expect(alice.tid("end-button")).to_be_visible(timeout=tb.LIVE_MS)
    await expect(host.participant(alice_id).get_by_test_id("badge-cohost")).to_have_count(1)
    await expect(cohost).to_contain_text("Remove co-host", timeout=tb.LIVE_MS)
    await cohost.click()
    await expect(alice.tid("host-controls")).to_be_hidden(timeout=tb.LIVE_MS)

    # The host ends the session: both pages show it; the host reads the attendance.
    await host.tid("end-button").click()
    for person in (host, alice):
        await expect(person.tid("session-state")).to_have_attribute("data-state", "ended",
                                                                    timeout=tb.LIVE_MS)
    await expect(host.tid("session-ended")).to_be_visible()
    await host.tid("attendance-button").click()
    await expect(host.tid("attendance-panel")).to_be_visible(timeout=tb.LIVE_MS)
    rows = host.tid("attendee")
    await expect(rows).to_have_count(2)
    alice_row = host.page.locator(f'[data-testid="attendee"][data-user-id="{alice_id}"]')
    await expect(alice_row).to_contain_text("Yes")  # she registered
    await expect(host.page.locator(
        f'[data-testid="attendee"][data-user-id="{host_id}"]')).to_contain_text("No")
    await expect(host.tid("attendance-summary")).to_have_text(
        "2 attended, 1 registered, 0 missed.")
    await expect(alice.tid("attendance-button")).to_be_hidden()
    await axe(host.page, "the stage page, ended, with attendance")

    await host.page.screenshot(path="/tmp/hearth-stage-host.png", full_page=True)
    await alice.page.screenshot(path="/tmp/hearth-stage-audience.png", full_page=True)
    assert errors == []


async def _community_with(http: aiohttp.ClientSession, base: str, token: str, name: str,
                          channels: list[tuple[str, str]]) -> tuple[int, dict[str, int]]:
    async with http.post(f"{base}/api/v1/communities", json={"name": name},
                         headers=bearer(token)) as reply:
        assert reply.status == 201, await reply.text()
        cid = int((await reply.json())["community"]["id"])
    ids = {}
    for channel, kind in channels:
        async with http.post(f"{base}/api/v1/communities/{cid}/channels",
                             json={"name": channel, "kind": kind}, headers=bearer(token)) as reply:
            assert reply.status == 201, await reply.text()
            ids[channel] = int((await reply.json())["channel"]["id"])
    return cid, ids


async def test_chat_links_voice_rooms_to_their_community(
        browser: Any, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    """The chat page shows voice and stage channels as such and links them to the voice
    page for their own community; the voice page lists that community's rooms, not the
    starter community's, and its switcher moves between communities."""
    errors: list[str] = []
    base = hearth_server.url
    async with aiohttp.ClientSession() as http:
        account = await register(http, base, password=tb.PASSWORD)
        cid, ids = await _community_with(http, base, account["access_token"], "Guild hall",
                                         [("campfire", "voice"), ("town square", "stage")])
    person = await tb.Person.open(browser, base, "dana", errors)
    await person.login(str(account["user"]["username"]))

    campfire = person.channel("campfire")
    await expect(campfire).to_have_attribute("data-channel-kind", "voice", timeout=tb.LIVE_MS)
    await expect(campfire).to_have_attribute(
        "href", f"/voice?community={cid}&channel={ids['campfire']}")
    await expect(campfire).to_have_accessible_name(
        re.compile(r"^campfire\s*voice channel, opens the voice page$"))
    await expect(campfire).not_to_contain_text("#")
    stage = person.channel("town square")
    await expect(stage).to_have_attribute("data-channel-kind", "stage")
    await expect(stage).to_have_accessible_name(
        re.compile(r"^town square\s*stage channel, opens the voice page$"))
    # Text channels keep their "#".
    await expect(person.channel("general").first).to_contain_text("#")

    await axe(person.page, "the chat page's channel list", within="#community-list")
    await campfire.click()
    await person.page.wait_for_url(f"**/voice?community={cid}&channel={ids['campfire']}")
    await person.connected()
    await expect(person.tid("community-select")).to_have_value(str(cid))
    await expect(person.tid("room-title")).to_have_text("campfire", timeout=tb.LIVE_MS)
    await axe(person.page, "the voice page")
    names = person.tid("room-list").get_by_test_id("room-link")
    await expect(names).to_have_count(2)
    await expect(person.page.locator('[data-testid="room-link"][data-channel-name="town square"]')
                 ).to_have_attribute("data-kind", "stage")

    # The switcher: the starter community has no rooms; the address follows.
    other = await person.tid("community-select").locator("option").evaluate_all(
        f"(os) => os.map((o) => o.value).filter((v) => v !== '{cid}')")
    await person.tid("community-select").select_option(other[0])
    await expect(person.tid("no-rooms")).to_be_visible(timeout=tb.LIVE_MS)
    await person.page.wait_for_url(f"**/voice?community={other[0]}")
    # And a reload of a link to the other community opens that one, not the starter.
    await person.page.goto(f"{base}/voice?community={cid}")
    await person.connected()
    await expect(person.tid("community-select")).to_have_value(str(cid))
    await expect(names).to_have_count(2, timeout=tb.LIVE_MS)
    assert errors == []


async def test_stage_page_fits_a_phone(
        browser: Any, hearth_server: Any, axe: Audit) -> None:  # noqa: F811
    """390x844: nothing scrolls sideways, the host's Start button is on screen and
    reachable, the schedule and details are readable."""
    errors: list[str] = []
    base = hearth_server.url
    starts_at = (int(time.time()) // 60 + 30) * 60_000
    async with aiohttp.ClientSession() as http:
        account = await register(http, base, password=tb.PASSWORD)
        cid, _ = await _community_with(http, base, account["access_token"],
                                       "A community with a rather long name", [])
        session = await _schedule(http, base, account["access_token"], cid, starts_at,
                                  capacity=150, prerequisite_course="Stagecraft 101",
                                  required_tier=0)
    person = await _open(browser, f"{base}/voice?community={cid}&channel={session['channel_id']}",
                         "phone", errors, viewport=PHONE)
    await expect(person.tid("auth-view")).to_be_visible(timeout=tb.LIVE_MS)
    await axe(person.page, "the voice page's sign-in form on a phone")
    await person.login(str(account["user"]["username"]))
    await expect(person.tid("session-start")).to_contain_text(_local_hhmm(starts_at),
                                                              timeout=tb.LIVE_MS)
    await expect(person.tid("schedule-item")).to_have_count(1)
    start = person.tid("start-button")
    await expect(start).to_be_in_viewport()
    widths = await person.page.evaluate(
        "({doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,"
        " view: window.innerWidth})")
    assert widths["doc"] <= widths["view"] and widths["body"] <= widths["view"], widths
    await person.page.screenshot(path="/tmp/hearth-stage-phone.png", full_page=True)
    await axe(person.page, "the stage page on a phone")

    # The owner schedules another session from the page, typing local (Kolkata) time.
    await person.page.locator("#schedule-new summary").click()
    await expect(person.tid("sf-starts")).not_to_have_value("")  # a default is offered
    await person.tid("sf-title").fill("Evening Q&A")
    await person.tid("sf-starts").fill("2031-05-04T18:30")
    await person.tid("sf-length").fill("45")
    await person.tid("sf-capacity").fill("12")
    await axe(person.page, "the schedule form on a phone")
    await person.tid("sf-submit").click()
    await expect(person.tid("sf-error")).to_have_text("")
    await expect(person.tid("room-title")).to_have_text("Evening Q&A", timeout=tb.LIVE_MS)
    await expect(person.tid("session-start")).to_have_attribute(
        "datetime", "2031-05-04T13:00:00.000Z")  # 18:30 at +05:30
    await expect(person.tid("session-capacity")).to_have_text("0 of 12 seats taken")
    await expect(person.tid("schedule-item")).to_have_count(2)
    assert await person.page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth")
    assert errors == []
