"""Voice rooms with real media: real aiortc peers join through the gateway and the
media workers (``rooms/media/pool.py``, spawned by the server with media_workers=1).

Covers what needs a successful join: the answer, the room list, ``voice_state_update``
to viewers, self mute, server mute (live and across re-joins), moderator disconnect and
move, sanctions taking a member out at once, SPEAK revoked, one participation per
member, room capacity, and the same across two nodes sharing Redis.

The media pool is ``rooms/media/pool.py`` with real worker processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from rooms.realtime.permissions import Permission as P
from server.app import SERVICES
from tests.conftest import RunningServer, app_server, server_nodes
from tests.helpers import GatewayClient, bearer
from tests.mod_helpers import Crew, make_crew
from tests.test_voice import audit, create_channel, eventually

pytestmark = pytest.mark.slow


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    async with app_server(database_url, media_workers=1) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def crew(server: RunningServer, http: aiohttp.ClientSession) -> Crew:
    return await make_crew(http, server.url, server.ws_url, members=3, mods=1)


@pytest.fixture
async def voice(server: RunningServer, http: aiohttp.ClientSession, crew: Crew) -> int:
    channel = await create_channel(http, server, crew, "lounge", "voice")
    for person in crew.everyone():
        await person.ws.event("channel_create")
    return int(channel["id"])


class Peer:
    """A real WebRTC client: one sendrecv microphone (silence), ``slots`` recvonly."""

    def __init__(self, slots: int = 2) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def close(self) -> None:
        await self.pc.close()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.close()


async def fresh(peers: list[Peer]) -> str:
    """A new peer's offer (closed with the others at the end)."""
    peer = Peer()
    peers.append(peer)
    return await peer.offer()


async def join(client: GatewayClient, channel_id: int, peers: list[Peer],
               **fields: Any) -> dict[str, Any]:
    peer = Peer()
    peers.append(peer)
    data = await client.ok("voice_join", channel_id=channel_id, sdp=await peer.offer(),
                           **fields)
    assert data["type"] == "voice_joined" and data["sdp"].startswith("v=0")
    await peer.answer(data["sdp"])
    return data


async def test_join_events_state_and_leave(server: RunningServer, crew: Crew, voice: int,
                                          peers: list[Peer]) -> None:
    a, b = crew.members[0], crew.members[1]
    data = await join(a.ws, voice, peers)
    assert [p["user_id"] for p in data["participants"]] == [a.id]
    event = await b.ws.event("voice_state_update", user_id=a.id)
    assert event["joined"] is True and event["channel_id"] == voice
    assert event["community_id"] == crew.community_id and event["role"] == "speaker"
    data = await join(b.ws, voice, peers, self_mute=True)
    assert sorted(p["user_id"] for p in data["participants"]) == sorted([a.id, b.id])
    event = await a.ws.event("voice_state_update", user_id=b.id)
    assert event["self_mute"] is True
    await a.ws.ok("voice_set_state", channel_id=voice, self_mute=True, self_deaf=True)
    event = await b.ws.event("voice_state_update", user_id=a.id)
    assert event["self_mute"] and event["self_deaf"] and event["joined"]
    await a.ws.ok("voice_leave", channel_id=voice)
    await b.ws.event("voice_state_update", user_id=a.id, joined=False)
    states = await crew.owner.ws.ok("voice_fetch_states", channel_id=voice)
    assert [p["user_id"] for p in states["participants"]] == [b.id]
    # the join and the leave are domain events for the sidecars (voice_attended)
    conn = await asyncpg.connect(server.database_url)
    try:
        deadline = time.monotonic() + 10
        while True:
            changes = [r["change"] for r in await conn.fetch(
                "SELECT payload->>'change' AS change FROM outbox_events"
                " WHERE type = 'voice_attended' AND (payload->>'user_id')::bigint = $1"
                " AND (payload->>'channel_id')::bigint = $2 ORDER BY id", a.id, voice)]
            if changes == ["joined", "left"]:
                break
            assert time.monotonic() < deadline, changes
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    # ICE candidates are bounded per join
    for _ in range(50):
        await b.ws.ok("voice_ice_candidate", channel_id=voice,
                      candidate="candidate:1 1 UDP 2122252543 192.0.2.10 50000 typ host",
                      sdp_mid="0", sdp_mline_index=0)
    reply = await b.ws.request("voice_ice_candidate", channel_id=voice,
                               candidate="candidate:1 1 UDP 2122252543 192.0.2.10 50000 typ host")
    assert reply["code"] == "rate_limited", reply


async def test_sanctions_take_a_participant_out_at_once(crew: Crew, voice: int,
                                                        peers: list[Peer]) -> None:
    cid, viewer = crew.community_id, crew.owner.ws
    timed, kicked, banned = crew.members
    for person in (timed, kicked, banned):
        await join(person.ws, voice, peers)
    await crew.mod.ws.ok("timeout_member", community_id=cid, user_id=timed.id, duration_s=60)
    event = await timed.ws.event("voice_disconnected")
    assert event == {"t": "voice_disconnected", "channel_id": voice, "reason": "sanctioned"}
    await viewer.event("voice_state_update", user_id=timed.id, joined=False)
    reply = await timed.ws.request("voice_join", channel_id=voice, sdp=await fresh(peers))
    assert reply["code"] == "timed_out"
    await crew.mod.ws.ok("kick_member", community_id=cid, user_id=kicked.id)
    assert (await kicked.ws.event("voice_disconnected"))["reason"] == "sanctioned"
    await crew.admin.ws.ok("ban_member", community_id=cid, user_id=banned.id)
    assert (await banned.ws.event("voice_disconnected"))["reason"] == "sanctioned"
    assert (await viewer.ok("voice_fetch_states", channel_id=voice))["participants"] == []


async def test_server_mute_live_and_across_rejoin(crew: Crew, voice: int,
                                                  peers: list[Peer]) -> None:
    member, viewer = crew.member, crew.members[1].ws
    await join(member.ws, voice, peers)
    await crew.mod.ws.ok("voice_server_mute", channel_id=voice, user_id=member.id)
    event = await viewer.event("voice_state_update", user_id=member.id, server_mute=True)
    assert event["joined"] is True
    await member.ws.ok("voice_set_state", channel_id=voice, self_mute=False, self_deaf=False)
    await member.ws.ok("voice_leave", channel_id=voice)
    data = await join(member.ws, voice, peers)
    [me] = [p for p in data["participants"] if p["user_id"] == member.id]
    assert me["server_mute"] is True


async def test_moderator_disconnect_and_move(server: RunningServer,
                                             http: aiohttp.ClientSession, crew: Crew,
                                             voice: int, peers: list[Peer]) -> None:
    cid, mod, member = crew.community_id, crew.mod.ws, crew.member
    other = await create_channel(http, server, crew, "quiet", "voice")
    await member.ws.event("channel_create")
    await join(member.ws, voice, peers)
    data = await mod.ok("voice_disconnect", channel_id=voice, user_id=member.id, reason="afk")
    assert (await member.ws.event("voice_disconnected"))["reason"] == "moderator"
    [entry] = await audit(mod, cid, action="voice.disconnect")
    assert entry["id"] == data["audit_id"] and entry["reason"] == "afk"
    await join(member.ws, voice, peers)
    await mod.ok("voice_move", channel_id=voice, user_id=member.id, to_channel_id=other["id"])
    request = await member.ws.event("voice_move_request")
    assert request["to_channel_id"] == other["id"] and request["channel_id"] == voice
    assert (await member.ws.event("voice_disconnected"))["reason"] == "moved"
    await join(member.ws, other["id"], peers)
    [entry] = await audit(mod, cid, action="voice.move")
    assert entry["before"] == {"channel_id": voice} and entry["after"] == {
        "channel_id": other["id"]}


async def test_speak_revoked_makes_a_listener(crew: Crew, voice: int,
                                              peers: list[Peer]) -> None:
    member = crew.member
    await join(member.ws, voice, peers)
    await crew.owner.ws.ok("set_channel_override", channel_id=voice, kind="member",
                           target_id=member.id, deny=int(P.SPEAK))
    event = await crew.members[1].ws.event("voice_state_update", user_id=member.id,
                                           role="listener")
    assert event["joined"] is True
    await crew.owner.ws.ok("set_channel_override", channel_id=voice, kind="member",
                           target_id=member.id, deny=int(P.CONNECT_VOICE))
    assert (await member.ws.event("voice_disconnected"))["reason"] == "permission"


async def test_one_participation_per_member(server: RunningServer,
                                            http: aiohttp.ClientSession, crew: Crew,
                                            voice: int, peers: list[Peer]) -> None:
    member = crew.member
    second = await GatewayClient.identified(http, server.ws_url, member.token)
    await join(member.ws, voice, peers)
    await join(second, voice, peers)
    assert (await member.ws.event("voice_disconnected"))["reason"] == "replaced"
    states = await crew.owner.ws.ok("voice_fetch_states", channel_id=voice)
    assert [p["user_id"] for p in states["participants"]] == [member.id]


async def test_room_capacity(database_url: str, http: aiohttp.ClientSession,
                             peers: list[Peer]) -> None:
    async with app_server(database_url, media_workers=1,
                          limits={"max_voice_room_participants": 1}) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=2, mods=0)
        channel = await create_channel(http, srv, crew, "tiny", "voice")
        for person in crew.members:
            await person.ws.event("channel_create")
        await join(crew.members[0].ws, channel["id"], peers)
        reply = await crew.members[1].ws.request("voice_join", channel_id=channel["id"],
                                                 sdp=await fresh(peers))
        assert reply["code"] == "voice_capacity", reply
        # The refused join left no per-member lock behind (nor did the joined member's
        # leave): failed joins must not grow the lock table.
        voice = srv.app[SERVICES].voice
        for _ in range(3):
            reply = await crew.members[1].ws.request("voice_join", channel_id=channel["id"],
                                                     sdp=await fresh(peers))
            assert reply["code"] == "voice_capacity", reply
        assert crew.members[1].id not in voice._locks
        await crew.members[0].ws.ok("voice_leave", channel_id=channel["id"])
        assert voice._locks == {}


@pytest.fixture
def two_nodes(database_url: str, redis_url: str) -> Iterator[list[RunningServer]]:
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url,
                      HEARTH_MEDIA_WORKERS="1") as nodes:
        yield nodes


async def test_two_nodes_share_rooms_and_sanctions(two_nodes: list[RunningServer],
                                                   http: aiohttp.ClientSession,
                                                   peers: list[Peer]) -> None:
    a, b = two_nodes
    crew = await make_crew(http, a.url, a.ws_url, members=2, mods=1)
    async with http.post(f"{a.url}/api/v1/communities/{crew.community_id}/channels",
                         json={"name": "lounge", "kind": "voice"},
                         headers=bearer(crew.owner.token)) as reply:
        channel = (await reply.json())["channel"]
    on_b = {p.id: await GatewayClient.identified(http, b.ws_url, p.token)
            for p in (crew.members[1], crew.mod)}
    await crew.member.ws.event("channel_create")
    await join(crew.member.ws, channel["id"], peers)  # on node A
    viewer = on_b[crew.members[1].id]
    event = await viewer.event("voice_state_update", user_id=crew.member.id)
    assert event["joined"] is True
    states = await eventually(viewer, "voice_fetch_states", "ok", channel_id=channel["id"])
    assert [p["user_id"] for p in states["data"]["participants"]] == [crew.member.id]
    await on_b[crew.mod.id].ok("timeout_member", community_id=crew.community_id,
                               user_id=crew.member.id, duration_s=60)
    assert (await crew.member.ws.event("voice_disconnected"))["reason"] == "sanctioned"
    await viewer.event("voice_state_update", user_id=crew.member.id, joined=False)


class CountingStageOptions:
    """The server's own stage room options, counting how often the voice rooms ask."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.asked: list[int] = []

    async def stage_room_options(self, channel_id: int
                                 ) -> tuple[int | None, str | None] | None:
        self.asked.append(channel_id)
        result: tuple[int | None, str | None] | None = \
            await self.live.stage_room_options(channel_id)
        return result


async def test_plain_voice_rooms_do_not_ask_live_sessions(
        server: RunningServer, http: aiohttp.ClientSession, crew: Crew, voice: int,
        peers: list[Peer]) -> None:
    """Only a stage can carry a live session: joining a plain voice room costs no
    live-session query; joining a stage does ask."""
    services = server.app[SERVICES]
    counting = CountingStageOptions(services.stage_rooms)
    services.voice.stage_options = counting
    await join(crew.member.ws, voice, peers)
    assert counting.asked == []
    stage = await create_channel(http, server, crew, "hall", "stage")
    await crew.members[1].ws.event("channel_create", channel=stage)
    await join(crew.members[1].ws, stage["id"], peers)
    assert counting.asked == [stage["id"]]
