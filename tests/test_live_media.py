"""A live session end to end with real media: the server with its media worker, aiortc
voice bots on the stage channel, REST for the session, the gateway for hands.

What the issue asks of a stage, measured on the real path: a promoted member is heard
by a listener within 1 s; attendance taken from real voice joins and leaves is right
to within 1 s; the recording holds every speaker's tone."""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from bots.client import HearthClient
from bots.voice_bot import VoiceBot, tone
from tests.conftest import RunningServer, app_server
from tests.helpers import bearer
from tests.media_peers import tones_in
from tests.mod_helpers import Crew, make_crew

pytestmark = pytest.mark.slow

HOST_HZ, GUEST_HZ, LISTENER_HZ = 440.0, 660.0, 880.0
TONES = [HOST_HZ, GUEST_HZ, LISTENER_HZ]
HEARD_RMS = 0.04
"""Band level of a 0.3-amplitude tone after Opus is ~0.1-0.2; silence reads ~0."""
MEDIA_S = 15.0


@pytest.fixture(params=[25, 0], ids=["forwarded", "mixed"])
async def server(database_url: str, request: pytest.FixtureRequest
                 ) -> AsyncIterator[RunningServer]:
    """The stage's audience gets per-speaker forwards (few listeners) or, with
    ``stage_mix_listeners_above`` 0, the one server-side mix."""
    async with app_server(database_url, media_workers=1,
                          stage_mix_listeners_above=request.param) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@contextlib.asynccontextmanager
async def on_stage(server: RunningServer, token: str, channel_id: int,
                   freq: float) -> AsyncIterator[tuple[VoiceBot, float]]:
    """An aiortc participant playing ``freq``, joined to the stage and connected;
    yields it with the monotonic time its join was answered (attendance starts then)."""
    client = HearthClient(server.ws_url, token, client_name="hearth-stage-test/1")
    await client.connect()
    bot = VoiceBot(client, tone(freq, 1.0))
    events = asyncio.create_task(bot.run_events())
    try:
        await bot.join(channel_id)
        joined = time.monotonic()
        await bot.wait_connected(MEDIA_S)
        yield bot, joined
    finally:
        with contextlib.suppress(Exception):
            await bot.leave()
        await client.close()
        # The event task may be closing the peer connection itself (the session's end
        # disconnects everyone): let it finish, so no socket is left open.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(events, 10)


async def first_heard(bot: VoiceBot, freq: float, timeout: float) -> float | None:
    """Seconds until ``bot`` hears ``freq`` (over a 0.1 s window), or None."""
    start_at = time.monotonic()
    while time.monotonic() - start_at < timeout:
        if bot.heard_rms(freq, 0.1) > HEARD_RMS:
            return time.monotonic() - start_at
        await asyncio.sleep(0.02)
    return None


class Sessions:
    def __init__(self, http: aiohttp.ClientSession, server: RunningServer, crew: Crew) -> None:
        self.http = http
        self.base = f"{server.url}/api/v1/communities/{crew.community_id}/live-sessions"

    async def call(self, method: str, token: str, path: str = "",
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers=bearer(token)) as reply:
            data = dict(await reply.json())
            assert reply.status in (200, 201), data
            return data


async def test_stage_promotion_attendance_and_recording(
        server: RunningServer, http: aiohttp.ClientSession,
        request: pytest.FixtureRequest) -> None:
    mixed = request.node.callspec.id == "mixed"
    crew = await make_crew(http, server.url, server.ws_url, members=2, mods=1)
    host, (guest, listener) = crew.mod, crew.members
    api = Sessions(http, server, crew)
    session = (await api.call("POST", crew.admin.token, "", {
        "title": "Office hours", "host_id": host.id, "recorded": True,
        "starts_at": int(time.time() * 1000) + 60_000}))["session"]
    sid, stage = session["id"], session["channel_id"]
    await api.call("POST", host.token, f"/{sid}/start")

    async with on_stage(server, host.token, stage, HOST_HZ) as (host_bot, host_joined), \
            on_stage(server, listener.token, stage, LISTENER_HZ) as (listener_bot,
                                                                    listener_joined):
        # The host is on stage from the start; the audience is not heard.
        assert await first_heard(listener_bot, HOST_HZ, MEDIA_S) is not None, \
            listener_bot.report()
        async with on_stage(server, guest.token, stage, GUEST_HZ) as (guest_bot, guest_joined):
            await asyncio.sleep(1.0)
            assert listener_bot.heard_rms(GUEST_HZ, 1.0) < HEARD_RMS / 4
            assert host_bot.heard_rms(LISTENER_HZ, 1.0) < HEARD_RMS / 4
            # Hand up, promoted: the listener hears the guest within 1 s.
            await guest.ws.ok("stage_raise_hand", session_id=sid, raised=True)
            await host.ws.ok("stage_set_speaker", session_id=sid, user_id=guest.id,
                             speaker=True)
            heard_after = await first_heard(listener_bot, GUEST_HZ, 3.0)
            assert heard_after is not None and heard_after <= 1.0, \
                (heard_after, listener_bot.report())
            assert await first_heard(guest_bot, HOST_HZ, 2.0) is not None
            # Two speakers reach the listener on one slot (the mix) or on two (forwards).
            active = [slot for slot, _, rms in listener_bot.report(0.5) if rms > HEARD_RMS]
            assert len(active) == (1 if mixed else 2), listener_bot.report(0.5)
            await asyncio.sleep(1.5)  # both speakers in the recording
        guest_left = time.monotonic()
        await asyncio.sleep(0.5)
        ended = await api.call("POST", host.token, f"/{sid}/end")
        end_at = time.monotonic()

    session = ended["session"]
    assert session["recording_path"] and session["recording_s"] > 2.0, session
    with wave.open(session["recording_path"], "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    audio = pcm.astype(np.float64)
    quarter = 12_000
    windows = [tones_in(audio[i:i + quarter], TONES) for i in range(0, len(audio), quarter)]
    heard = set().union(*windows)
    assert {HOST_HZ, GUEST_HZ} <= heard and LISTENER_HZ not in heard, windows

    report = await api.call("GET", host.token, f"/{sid}/attendance")
    by_user = {a["user_id"]: a for a in report["attendees"]}
    expected = {guest.id: guest_left - guest_joined, listener.id: end_at - listener_joined,
                host.id: end_at - host_joined}
    for user_id, seconds in expected.items():
        total = by_user[user_id]["total_s"]
        assert abs(total - seconds) <= 1.0, (user_id, total, seconds)
    assert set(report["attended"]) >= {guest.id, listener.id}


async def test_a_stage_started_on_one_node_records_what_members_of_another_say(
        database_url: str, redis_url: str, http: aiohttp.ClientSession) -> None:
    """The session starts on node one; its members join on node two, whose process never
    saw the start: the room still opens recorded (options come from the live session),
    a promotion made on node one reaches them, and the recording holds both speakers."""
    from rooms.media import passthrough
    from tests.conftest import server_nodes

    passthrough.set_host_address_mode("loopback")
    try:
        with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url,
                          HEARTH_MEDIA_LISTEN="127.0.0.1:0", HEARTH_MEDIA_WORKERS="1",
                          HEARTH_MEDIA_ICE="loopback") as (one, two):
            crew = await make_crew(http, one.url, one.ws_url, members=2, mods=1)
            host, (guest, listener) = crew.mod, crew.members
            api = Sessions(http, one, crew)
            sid = (await api.call("POST", crew.admin.token, "", {
                "title": "Across nodes", "host_id": host.id, "recorded": True,
                "starts_at": int(time.time() * 1000) + 60_000}))["session"]["id"]
            stage = (await api.call("POST", host.token, f"/{sid}/start"))["session"][
                "channel_id"]
            async with on_stage(two, host.token, stage, HOST_HZ) as (_, _j1), \
                    on_stage(two, listener.token, stage, LISTENER_HZ) as (listener_bot, _j2), \
                    on_stage(two, guest.token, stage, GUEST_HZ) as (_, _j3):
                assert await first_heard(listener_bot, HOST_HZ, MEDIA_S) is not None
                await host.ws.ok("stage_set_speaker", session_id=sid, user_id=guest.id,
                                 speaker=True)  # on node one
                assert await first_heard(listener_bot, GUEST_HZ, 3.0) is not None, \
                    listener_bot.report()
                await asyncio.sleep(1.5)
                ended = (await api.call("POST", host.token, f"/{sid}/end"))["session"]
            assert ended["recording_path"], ended
            with wave.open(ended["recording_path"], "rb") as wav:
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
            audio = pcm.astype(np.float64)
            heard = set().union(*(tones_in(audio[i:i + 12_000], TONES)
                                  for i in range(0, len(audio), 12_000)))
            assert {HOST_HZ, GUEST_HZ} <= heard and LISTENER_HZ not in heard, heard
    finally:
        passthrough.set_host_address_mode("default")


async def test_members_who_joined_before_the_start_are_in_the_recording(
        database_url: str, http: aiohttp.ClientSession) -> None:
    """The host joins the stage to check their sound before the start: the room opens
    without a recorder (the session is not live yet). At the start the live session
    sends the stage's options to the worker, which attaches the recorder to the open
    room: what the host says after the start is in the recording."""
    async with app_server(database_url, media_workers=1) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=1, mods=1)
        api = Sessions(http, srv, crew)
        session = (await api.call("POST", crew.admin.token, "", {
            "title": "Early", "host_id": crew.mod.id, "recorded": True,
            "starts_at": int(time.time() * 1000) + 60_000}))["session"]
        sid, stage = session["id"], session["channel_id"]
        async with on_stage(srv, crew.mod.token, stage, HOST_HZ), \
                on_stage(srv, crew.member.token, stage, LISTENER_HZ) as (listener_bot, _):
            await api.call("POST", crew.mod.token, f"/{sid}/start")
            assert await first_heard(listener_bot, HOST_HZ, MEDIA_S) is not None, \
                listener_bot.report()
            await asyncio.sleep(2.0)
            ended = (await api.call("POST", crew.mod.token, f"/{sid}/end"))["session"]
    assert ended["recording_path"] and ended["recording_s"] > 1.0, ended
    with wave.open(ended["recording_path"], "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    audio = pcm.astype(np.float64)
    heard = set().union(*(tones_in(audio[i:i + 12_000], TONES)
                          for i in range(0, len(audio), 12_000)))
    assert HOST_HZ in heard and LISTENER_HZ not in heard, heard
