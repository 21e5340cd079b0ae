"""Voice rooms and stages (issue 6) end to end: web/voice.html in headless Chromium, an
aiortc peer (bots/voice_bot.py), a real ``hearth serve`` process with its real media
worker, real PostgreSQL.

Each Chromium process gets its own fake microphone: a WAV file of a pure tone at a
frequency nobody else uses (``--use-file-for-fake-audio-capture``), so "who hears whom"
is a question about frequencies. The bot measures what it decodes with an FFT
(``VoiceBot.heard_rms``); the page measures what it plays with WebAudio analysers
(``window.hearthVoice.measure()``). Mute is checked both ways round: the muted tone
disappears for the listener, and comes back on unmute (so it was the mute, not a dead
connection). Every console error or uncaught exception fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.client import HearthClient
from bots.voice_bot import VoiceBot, tone, write_wav
from tests import test_browser as tb
from tests.a11y import Audit
from tests.helpers import bearer, register

expect = tb.expect
playwright_api = tb.playwright_api
pytestmark = [tb.pytestmark, pytest.mark.slow]

MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              "--allow-loopback-in-peer-connection",
              "--autoplay-policy=no-user-gesture-required"]
BOT_HZ = 1000.0
ALICE_HZ = 660.0
BOB_HZ = 820.0
HEARD_RMS = 0.04
"""A tone of amplitude 0.3 reads ~0.21 RMS; Opus and the SFU keep most of it."""
SILENT_RMS = 0.01
MEDIA_S = 15.0
"""How long audio may take to start flowing (ICE + DTLS + the first forwarded packets,
on two shared cores running two Chromiums, the server, its worker and the bot)."""


Launcher = Callable[[float], Awaitable[Any]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launcher]:
    """Start a Chromium whose fake microphone plays a tone of the given frequency (one
    process per tone: the capture file is a process-wide flag)."""
    if tb.CHROMIUM_PATH is None:
        pytest.fail(f"no Chromium at {tb.CHROMIUM}: `./dev test` installs Debian's chromium")
    browsers: list[Any] = []
    async with playwright_api.async_playwright() as p:

        async def start(freq_hz: float) -> Any:
            wav = tmp_path / f"tone-{int(freq_hz)}.wav"
            write_wav(wav, tone(freq_hz, 2.0))
            instance = await p.chromium.launch(
                executable_path=tb.CHROMIUM_PATH,
                args=[*tb.CHROMIUM_ARGS, *MEDIA_ARGS,
                      f"--use-file-for-fake-audio-capture={wav}"])
            browsers.append(instance)
            return instance

        try:
            yield start
        finally:
            for instance in browsers:
                with contextlib.suppress(Exception):
                    await instance.close()


class Listener(tb.Person):
    """A person on /voice."""

    @classmethod
    async def open_voice(cls, browser: Any, url: str, name: str,
                         errors: list[str]) -> Listener:
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        person = cls(await context.new_page(), name, errors)
        await person.page.goto(url + "/voice")
        return person

    async def login(self, username: str) -> None:
        await expect(self.tid("auth-view")).to_be_visible(timeout=tb.LIVE_MS)
        await self.tid("auth-username").fill(username)
        await self.tid("auth-password").fill(tb.PASSWORD)
        await self.tid("login-button").click()
        await self.connected()

    def room(self, name: str) -> Any:
        return self.page.locator(f'[data-testid="room-link"][data-channel-name="{name}"]')

    def participant(self, user_id: int) -> Any:
        return self.page.locator(f'[data-testid="participant"][data-user-id="{user_id}"]')

    async def enter(self, community_id: int, room: str) -> None:
        """Pick the community and the room, switch voice processing off (it would treat
        a steady tone as noise), join, and wait until the audio connection is up."""
        await self.tid("community-select").select_option(str(community_id))
        await self.room(room).click()
        await expect(self.tid("room-title")).to_have_text(room)
        await self.tid("voice-processing").uncheck()
        await self.tid("join-button").click()
        await expect(self.tid("voice-status")).to_have_text(f"Connected to {room}.",
                                                            timeout=MEDIA_S * 1000)

    async def measure(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("window.hearthVoice.measure()"))

    async def hears(self, freq_hz: float, *, timeout: float = MEDIA_S) -> dict[str, Any]:
        """Wait until some receive slot plays ``freq_hz`` as its loudest frequency."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = await self.measure()
            for slot in seen:
                if abs(slot["hz"] - freq_hz) < 15 and slot["rms"] > HEARD_RMS / 2:
                    return slot
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.name} never heard {freq_hz} Hz; slots: {seen}")


async def eventually(check: Callable[[], bool], what: str,
                     timeout: float = tb.LIVE_MS / 1000) -> None:
    """Poll ``check`` (state the bot keeps from its events) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def bot_hears(bot: VoiceBot, freq_hz: float, *, timeout: float = MEDIA_S) -> float:
    deadline = time.monotonic() + timeout
    level = 0.0
    while time.monotonic() < deadline:
        level = bot.heard_rms(freq_hz, 1.0)
        if level > HEARD_RMS:
            return level
        await asyncio.sleep(0.2)
    raise AssertionError(f"the bot never heard {freq_hz} Hz (last level {level:.4f}; "
                         f"slots {bot.report()})")


async def bot_stops_hearing(bot: VoiceBot, freq_hz: float, *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    level = 1.0
    while time.monotonic() < deadline:
        level = bot.heard_rms(freq_hz, 1.0)
        if level < SILENT_RMS:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the bot still hears {freq_hz} Hz at {level:.4f}")


async def _setup(http: aiohttp.ClientSession, base: str, *people: str,
                 kind: str = "voice", room: str = "lounge") -> dict[str, Any]:
    """An owner's fresh community with one voice (or stage) channel, and ``people``
    registered and joined through an invite. Returns ids and tokens."""
    owner = await register(http, base, password=tb.PASSWORD)
    headers = bearer(owner["access_token"])
    async with http.post(f"{base}/api/v1/communities", json={"name": "Voice club"},
                         headers=headers) as reply:
        assert reply.status == 201, await reply.text()
        community_id = (await reply.json())["community"]["id"]
    async with http.post(f"{base}/api/v1/communities/{community_id}/channels",
                         json={"name": room, "kind": kind}, headers=headers) as reply:
        assert reply.status == 201, await reply.text()
        channel_id = (await reply.json())["channel"]["id"]
    async with http.post(f"{base}/api/v1/communities/{community_id}/invites", json={},
                         headers=headers) as reply:
        assert reply.status == 201, await reply.text()
        code = (await reply.json())["code"]
    accounts = {"owner": owner}
    for name in people:
        account = await register(http, base, f"{name}{time.time_ns() % 10**9}",
                                 password=tb.PASSWORD)
        async with http.post(f"{base}/api/v1/invites/{code}/join",
                             headers=bearer(account["access_token"])) as reply:
            assert reply.status in (200, 201), await reply.text()
        accounts[name] = account
    return {"community_id": community_id, "channel_id": channel_id, "accounts": accounts}


@contextlib.asynccontextmanager
async def voice_bot(ws_url: str, token: str, channel_id: int) -> AsyncIterator[VoiceBot]:
    """The aiortc participant, joined and connected, consuming its own events."""
    client = HearthClient(ws_url, token, client_name="hearth-voice-bot-test/1")
    await client.connect()
    bot = VoiceBot(client, tone(BOT_HZ, 1.0))
    events = asyncio.create_task(bot.run_events())
    try:
        await bot.join(channel_id)
        await bot.wait_connected(MEDIA_S)
        yield bot
    finally:
        await bot.leave()
        await client.close()
        events.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await events


def _uid(account: dict[str, Any]) -> int:
    return int(account["user"]["id"])


def _username(account: dict[str, Any]) -> str:
    return str(account["user"]["username"])


async def test_two_browsers_and_a_bot_talk_and_mute_silences(
        launch: Launcher, hearth_server: Any) -> None:
    errors: list[str] = []
    async with aiohttp.ClientSession() as http:
        world = await _setup(http, hearth_server.url, "alice", "bob", "robot")
    accounts = world["accounts"]
    cid, channel_id = world["community_id"], world["channel_id"]

    alice = await Listener.open_voice(await launch(ALICE_HZ), hearth_server.url, "alice",
                                      errors)
    await alice.login(_username(accounts["alice"]))

    async with voice_bot(hearth_server.ws_url, accounts["robot"]["access_token"],
                         channel_id) as bot:
        await alice.enter(cid, "lounge")

        # Both are listed on the page; the room count in the sidebar follows.
        await expect(alice.participant(_uid(accounts["robot"]))).to_have_count(
            1, timeout=tb.LIVE_MS)
        await expect(alice.participant(_uid(accounts["alice"]))).to_have_count(1)
        await expect(alice.room("lounge").get_by_test_id("room-count")).to_have_text("2")

        # The bot hears Alice's tone, and Alice's page plays the bot's.
        await bot_hears(bot, ALICE_HZ)
        await alice.hears(BOT_HZ)
        assert bot.heard_rms(BOT_HZ) < SILENT_RMS, "the bot hears itself"

        # The speaking highlight: the bot talks nonstop, so Alice's page marks it.
        await expect(alice.participant(_uid(accounts["robot"]))).to_have_attribute(
            "data-speaking", "true", timeout=tb.LIVE_MS)
        await eventually(lambda: _uid(accounts["alice"]) in bot.speaking,
                         "the bot sees Alice speaking")

        # Alice mutes: the state reaches the bot, her tone stops, the bot still plays.
        await alice.tid("mute-button").click()
        await expect(alice.tid("mute-button")).to_have_attribute("aria-pressed", "true")
        await expect(alice.participant(_uid(accounts["alice"])).get_by_test_id(
            "badge-self-mute")).to_have_count(1, timeout=tb.LIVE_MS)
        await eventually(lambda: bot.participants[_uid(accounts["alice"])].self_mute,
                         "the bot sees Alice muted")
        await bot_stops_hearing(bot, ALICE_HZ)
        await alice.hears(BOT_HZ)

        # Unmuted, she is heard again: it was the mute, not a dead connection.
        await alice.tid("mute-button").click()
        await expect(alice.tid("mute-button")).to_have_attribute("aria-pressed", "false")
        await bot_hears(bot, ALICE_HZ)

        # Bob joins from a second browser: everyone hears both others.
        bob = await Listener.open_voice(await launch(BOB_HZ), hearth_server.url, "bob",
                                        errors)
        await bob.login(_username(accounts["bob"]))
        await bob.enter(cid, "lounge")
        await expect(alice.participant(_uid(accounts["bob"]))).to_have_count(
            1, timeout=tb.LIVE_MS)
        await bot_hears(bot, BOB_HZ)
        await bot_hears(bot, ALICE_HZ)
        await bob.hears(BOT_HZ)
        await bob.hears(ALICE_HZ)
        await alice.hears(BOB_HZ)

        # Deafened, Bob's page plays nothing (his slots are muted locally and the
        # server stops forwarding to him), yet he is still heard.
        await bob.tid("deafen-button").click()
        await expect(bob.tid("deafen-button")).to_have_attribute("aria-pressed", "true")
        assert all(slot["muted"] for slot in await bob.measure())
        await bot_hears(bot, BOB_HZ)

        # Alice leaves: the bot and Bob see it, and the bot no longer hears her.
        await alice.tid("leave-button").click()
        await expect(alice.tid("voice-status")).to_have_text("Not in a room.")
        await expect(bob.participant(_uid(accounts["alice"]))).to_have_count(
            0, timeout=tb.LIVE_MS)
        await bot_stops_hearing(bot, ALICE_HZ)
        assert _uid(accounts["alice"]) not in bot.participants

    await alice.page.screenshot(path="/tmp/hearth-voice.png")
    assert errors == []


async def test_voice_page_explains_refusals(launch: Launcher, hearth_server: Any) -> None:
    """A member without a voice room sees the empty state; a wrong password is shown on
    the form; nothing else breaks on the page."""
    errors: list[str] = []
    async with aiohttp.ClientSession() as http:
        account = await register(http, hearth_server.url, password=tb.PASSWORD)
    person = await Listener.open_voice(await launch(ALICE_HZ), hearth_server.url, "carol",
                                       errors)
    await person.tid("auth-username").fill(_username(account))
    await person.tid("auth-password").fill("not the password")
    await person.tid("login-button").click()
    await expect(person.tid("auth-error")).to_have_text(
        "That username and password don't match. Please try again.")
    errors[:] = [e for e in errors if "401" not in e]
    await person.tid("auth-password").fill(tb.PASSWORD)
    await person.tid("login-button").click()
    await person.connected()
    # The starter community has no voice channels.
    await expect(person.tid("no-rooms")).to_be_visible(timeout=tb.LIVE_MS)
    await expect(person.tid("join-button")).to_be_disabled()
    assert errors == []


async def browser_stays_deaf_to(person: Listener, freq_hz: float, seconds: float = 2.0) -> None:
    """For ``seconds``, no slot of ``person``'s page plays ``freq_hz``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for slot in await person.measure():
            assert not (abs(slot["hz"] - freq_hz) < 15 and slot["rms"] > HEARD_RMS / 2), \
                f"{person.name} hears {freq_hz} Hz: {slot}"
        await asyncio.sleep(0.25)


async def test_stage_hand_promote_demote_and_qa(launch: Launcher, hearth_server: Any,
                                               axe: Audit) -> None:
    """A live session's stage: the audience is not heard until the host lets them speak
    (raise hand -> invite to speak), and not after being moved back; Q&A asks, votes,
    orders by votes, and the host marks answered and dismisses, live on both pages."""
    errors: list[str] = []
    base = hearth_server.url
    async with aiohttp.ClientSession() as http:
        world = await _setup(http, base, "alice")
        accounts = world["accounts"]
        cid = world["community_id"]
        headers = bearer(accounts["owner"]["access_token"])
        async with http.post(f"{base}/api/v1/communities/{cid}/live-sessions", json={
                "title": "Office hours", "starts_at": int(time.time() * 1000),
                "description": "Bring questions"}, headers=headers) as reply:
            assert reply.status == 201, await reply.text()
            session = (await reply.json())["session"]
        async with http.post(f"{base}/api/v1/communities/{cid}/live-sessions/"
                             f"{session['id']}/start", headers=headers) as reply:
            assert reply.status == 200, await reply.text()
    host_id, alice_id = _uid(accounts["owner"]), _uid(accounts["alice"])

    host = await Listener.open_voice(await launch(BOT_HZ), base, "host", errors)
    await host.login(_username(accounts["owner"]))
    alice = await Listener.open_voice(await launch(ALICE_HZ), base, "alice", errors)
    await alice.login(_username(accounts["alice"]))
    for person in (host, alice):
        await person.enter(cid, "Office hours")
        await expect(person.tid("session-title")).to_have_text("Office hours")
        await expect(person.tid("session-state")).to_have_attribute("data-state", "live")

    # The host speaks; Alice listens and is not heard.
    await expect(host.participant(alice_id)).to_have_attribute("data-role", "listener",
                                                               timeout=tb.LIVE_MS)
    await expect(alice.participant(host_id).get_by_test_id("badge-host")).to_have_count(1)
    await alice.hears(BOT_HZ)
    await browser_stays_deaf_to(host, ALICE_HZ)

    # Alice raises her hand; the host sees it and invites her to speak.
    await alice.tid("hand-button").click()
    await expect(alice.tid("hand-button")).to_have_attribute("aria-pressed", "true",
                                                             timeout=tb.LIVE_MS)
    hand = host.page.locator(f'[data-testid="hand"][data-user-id="{alice_id}"]')
    await expect(hand).to_have_count(1, timeout=tb.LIVE_MS)
    await expect(alice.tid("hands").locator("button")).to_have_count(0)  # not a host
    await hand.get_by_test_id("promote-button").click()
    await expect(hand).to_have_count(0, timeout=tb.LIVE_MS)
    await expect(host.participant(alice_id)).to_have_attribute("data-role", "speaker",
                                                               timeout=tb.LIVE_MS)
    await expect(alice.tid("hand-button")).to_be_hidden()
    await host.hears(ALICE_HZ)

    # Moved back to the audience, she is not heard any more.
    await host.participant(alice_id).get_by_test_id("demote-button").click()
    await expect(host.participant(alice_id)).to_have_attribute("data-role", "listener",
                                                               timeout=tb.LIVE_MS)
    await asyncio.sleep(1.0)  # what was already in flight drains
    await browser_stays_deaf_to(host, ALICE_HZ)

    # Q&A: Alice asks two questions; both pages list them live.
    for text in ("How do stages work?", "Is this recorded?"):
        await alice.tid("qa-input").fill(text)
        await alice.tid("qa-ask-button").click()
        await expect(alice.tid("qa-input")).to_have_value("", timeout=tb.LIVE_MS)
    q = {p.name: {t: p.tid("qa-list").locator('[data-testid="question"]').filter(has_text=t)
                  for t in ("How do stages work?", "Is this recorded?")}
         for p in (host, alice)}
    for person in (host, alice):
        await expect(q[person.name]["Is this recorded?"]).to_have_count(1, timeout=tb.LIVE_MS)
    # The host upvotes the second: it moves to the top on Alice's page, count 1.
    await q["host"]["Is this recorded?"].get_by_test_id("vote-button").click()
    await expect(q["host"]["Is this recorded?"].get_by_test_id("vote-button")
                 ).to_have_attribute("aria-pressed", "true", timeout=tb.LIVE_MS)
    await expect(q["alice"]["Is this recorded?"].get_by_test_id("vote-count")).to_have_text(
        "1", timeout=tb.LIVE_MS)
    await expect(alice.tid("question-text").first).to_have_text("Is this recorded?")
    # Alice cannot moderate questions; the host marks one answered and dismisses one.
    await expect(alice.tid("mark-answered")).to_have_count(0)
    await q["host"]["Is this recorded?"].get_by_test_id("mark-answered").click()
    await expect(q["alice"]["Is this recorded?"]).to_have_attribute(
        "data-state", "answered", timeout=tb.LIVE_MS)
    await expect(q["alice"]["Is this recorded?"].get_by_test_id("question-state")
                 ).to_have_text("Answered")
    await q["host"]["How do stages work?"].get_by_test_id("mark-dismissed").click()
    await expect(q["alice"]["How do stages work?"]).to_have_count(0, timeout=tb.LIVE_MS)
    await expect(q["host"]["How do stages work?"]).to_have_attribute("data-state", "dismissed")

    await axe(host.page, "the stage page with Q&A, host view")
    await axe(alice.page, "the stage page with Q&A, audience view")
    await host.page.screenshot(path="/tmp/hearth-stage.png")
    assert errors == []
