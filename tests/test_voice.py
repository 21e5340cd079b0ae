"""Voice rooms, gateway side (issue 6), over real websockets and PostgreSQL: channel
kinds, every check a join makes before media is involved, bad input, the moderation
ops' permission and rank checks and their audit entries.

What needs a media worker (a successful join, state events, sanctions taking a member
out of a room) is in tests/test_voice_media.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from rooms.realtime.permissions import Permission as P
from tests.conftest import RunningServer, app_server
from tests.helpers import GatewayClient, bearer, register
from tests.mod_helpers import Crew, make_crew

OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
         "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n"
         "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=recvonly\r\n")


def offer(*directions: str, kind: str = "audio") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i, d in enumerate(directions):
        lines += [f"m={kind if i == 0 else 'audio'} 9 UDP/TLS/RTP/SAVPF 111", f"a=mid:{i}",
                  f"a={d}"]
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    """Hearth in this loop with no media workers: everything up to the media call."""
    async with app_server(database_url, media_workers=0) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create_channel(http: aiohttp.ClientSession, server: RunningServer, crew: Crew,
                         name: str, kind: str) -> dict[str, Any]:
    async with http.post(f"{server.url}/api/v1/communities/{crew.community_id}/channels",
                         json={"name": name, "kind": kind},
                         headers=bearer(crew.owner.token)) as reply:
        body = await reply.json()
        assert reply.status in (200, 201), body
    return dict(body.get("channel", body))


@pytest.fixture
async def crew(server: RunningServer, http: aiohttp.ClientSession) -> Crew:
    crew = await make_crew(http, server.url, server.ws_url, members=3, mods=1)
    return crew


@pytest.fixture
async def voice(server: RunningServer, http: aiohttp.ClientSession, crew: Crew) -> int:
    """A voice channel every member has received (``channel_create``)."""
    channel = await create_channel(http, server, crew, "lounge", "voice")
    assert channel["kind"] == "voice"
    for person in crew.everyone():
        await person.ws.event("channel_create", timeout=5)
    return int(channel["id"])


async def eventually(client: GatewayClient, op: str, want: str,
                     **fields: Any) -> dict[str, Any]:
    """Repeat a request until it answers ``want`` (an error code, or ``ok``) or 3 s
    pass (a view refresh after ``permissions_update`` runs in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while True:
        reply = await client.request(op, **fields)
        if reply.get("code", reply["op"]) == want or loop.time() > deadline:
            return reply
        await asyncio.sleep(0.05)


async def audit(client: GatewayClient, community_id: int, **filters: Any) -> list[dict[str, Any]]:
    return list((await client.ok("fetch_audit_log", community_id=community_id,
                                 **filters))["entries"])


# ----------------------------------------------------------------------- channels


async def test_voice_and_stage_channels_are_created_and_seen(
        server: RunningServer, http: aiohttp.ClientSession, crew: Crew) -> None:
    stage = await create_channel(http, server, crew, "town hall", "stage")
    assert stage["kind"] == "stage"
    event = await crew.member.ws.event("channel_create")
    assert event["channel"]["id"] == stage["id"] and event["channel"]["kind"] == "stage"
    # A fresh session sees both kinds in ready, and nobody is in the rooms yet.
    voice = await create_channel(http, server, crew, "lounge", "voice")
    client = await GatewayClient.identified(http, server.ws_url, crew.member.token)
    kinds = {c["name"]: c["kind"] for s in client.ready["communities"] for c in s["channels"]}
    assert kinds["town hall"] == "stage" and kinds["lounge"] == "voice"
    data = await client.ok("voice_fetch_states", channel_id=voice["id"])
    assert data == {"type": "voice_states", "channel_id": voice["id"], "participants": []}
    # An unknown kind is still refused.
    async with http.post(f"{server.url}/api/v1/communities/{crew.community_id}/channels",
                         json={"name": "x", "kind": "video"},
                         headers=bearer(crew.owner.token)) as reply:
        assert reply.status == 400


# --------------------------------------------------------------------------- joins


async def test_join_refusals_before_media(server: RunningServer, http: aiohttp.ClientSession,
                                          crew: Crew, voice: int) -> None:
    member = crew.member.ws
    # not a voice channel / unknown / not visible to a stranger
    reply = await member.request("voice_join", channel_id=crew.general, sdp=OFFER)
    assert reply["code"] == "invalid_argument", reply
    reply = await member.request("voice_join", channel_id=10**9, sdp=OFFER)
    assert reply["code"] == "not_found", reply
    stranger = await register(http, server.url)
    other = await GatewayClient.identified(http, server.ws_url, stranger["access_token"])
    reply = await other.request("voice_join", channel_id=voice, sdp=OFFER)
    assert reply["code"] == "not_found", reply
    # offers the SFU cannot serve
    for bad in (offer("sendrecv", kind="video"), offer("recvonly", "recvonly"),
                offer("sendrecv", "sendrecv"), offer(*(["sendrecv"] + ["recvonly"] * 10)),
                "not sdp at all"):
        reply = await member.request("voice_join", channel_id=voice, sdp=bad)
        assert reply["code"] == "invalid_argument", (bad, reply)
    # schema limits: empty or too long SDP never reaches the service
    for sdp in ("", "v=0\r\n" + "a" * 40_000):
        reply = await member.request("voice_join", channel_id=voice, sdp=sdp)
        assert reply["code"] == "invalid_frame", reply
    # a good offer gets as far as the media workers (none here)
    reply = await member.request("voice_join", channel_id=voice, sdp=offer(
        *(["sendrecv"] + ["recvonly"] * 9)))
    assert reply["code"] == "voice_unavailable", reply
    # nothing of this touched anyone else, and the connection lives on
    await member.ok("send_message", channel_id=crew.general, content="still here")
    data = await crew.members[1].ws.ok("voice_fetch_states", channel_id=voice)
    assert data["participants"] == []


async def test_connect_voice_timeouts_and_bans(server: RunningServer,
                                               http: aiohttp.ClientSession, crew: Crew,
                                               voice: int) -> None:
    cid, owner = crew.community_id, crew.owner.ws
    denied, timed_out, banned = crew.members
    await owner.ok("set_channel_override", channel_id=voice, kind="member",
                   target_id=denied.id, deny=int(P.CONNECT_VOICE))
    await denied.ws.event("permissions_update")
    # The session's view is re-read in the background after permissions_update.
    reply = await eventually(denied.ws, "voice_join", "forbidden", channel_id=voice, sdp=OFFER)
    assert reply["code"] == "forbidden", reply
    await crew.mod.ws.ok("timeout_member", community_id=cid, user_id=timed_out.id,
                         duration_s=600)
    await timed_out.ws.event("member_sanctioned")
    reply = await timed_out.ws.request("voice_join", channel_id=voice, sdp=OFFER)
    assert reply["code"] == "timed_out" and 590_000 < reply["retry_after_ms"] <= 600_000
    await crew.admin.ws.ok("ban_member", community_id=cid, user_id=banned.id,
                           duration_s=3600)
    await banned.ws.event("community_unavailable")
    reply = await banned.ws.request("voice_join", channel_id=voice, sdp=OFFER)
    assert reply["code"] == "banned", reply
    assert 3_590_000 < reply["retry_after_ms"] <= 3_600_000


async def test_voice_disabled(database_url: str, http: aiohttp.ClientSession) -> None:
    async with app_server(database_url, voice_enabled=False) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=1, mods=0)
        channel = await create_channel(http, srv, crew, "lounge", "voice")
        await crew.member.ws.event("channel_create")
        reply = await crew.member.ws.request("voice_join", channel_id=channel["id"], sdp=OFFER)
        assert reply["code"] == "voice_unavailable", reply


async def test_ops_outside_a_room(crew: Crew, voice: int) -> None:
    member = crew.member.ws
    assert await member.ok("voice_leave", channel_id=voice) == {"type": "empty"}
    reply = await member.request("voice_set_state", channel_id=voice, self_mute=True,
                                 self_deaf=False)
    assert reply["code"] == "not_found", reply
    reply = await member.request("voice_ice_candidate", channel_id=voice,
                                 candidate="candidate:1 1 UDP 1 192.0.2.1 9 typ host")
    assert reply["code"] == "not_found", reply
    reply = await member.request("voice_ice_candidate", channel_id=voice, candidate="x",
                                 sdp_mline_index=64)
    assert reply["code"] == "invalid_frame", reply
    reply = await member.request("voice_fetch_states", channel_id=crew.general)
    assert reply["code"] == "invalid_argument", reply


# ---------------------------------------------------------------------- moderation


async def test_server_mute_checks_rank_and_is_audited(crew: Crew, voice: int,
                                                      database_url: str) -> None:
    import asyncpg

    cid, mod, member = crew.community_id, crew.mod.ws, crew.member.ws
    reply = await member.request("voice_server_mute", channel_id=voice,
                                 user_id=crew.members[1].id)
    assert reply["code"] == "forbidden", reply
    for target in (crew.admin.id, crew.owner.id):
        reply = await mod.request("voice_server_mute", channel_id=voice, user_id=target)
        assert reply["code"] == "forbidden", reply
    reply = await mod.request("voice_server_mute", channel_id=voice, user_id=crew.mod.id)
    assert reply["code"] == "invalid_argument", reply
    reply = await mod.request("voice_server_mute", channel_id=crew.general,
                              user_id=crew.member.id)
    assert reply["code"] == "invalid_argument", reply
    reply = await mod.request("voice_server_mute", channel_id=voice, user_id=10**9)
    assert reply["code"] == "not_found", reply
    assert await audit(mod, cid, action="voice.mute") == []  # nothing refused was audited
    data = await mod.ok("voice_server_mute", channel_id=voice, user_id=crew.member.id,
                        reason="echo")
    [entry] = await audit(mod, cid, action="voice.mute")
    assert entry["id"] == data["audit_id"] and entry["actor_id"] == crew.mod.id
    assert entry["target_id"] == crew.member.id and entry["reason"] == "echo"
    assert entry["after"] == {"server_mute": True, "channel_id": voice}
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM voice_server_mutes"
                                   " WHERE community_id = $1 AND user_id = $2",
                                   cid, crew.member.id) == 1
        await mod.ok("voice_server_mute", channel_id=voice, user_id=crew.member.id,
                     muted=False)
        assert await conn.fetchval("SELECT count(*) FROM voice_server_mutes") == 0
    finally:
        await conn.close()
    assert [e["action"] for e in await audit(mod, cid, target_id=crew.member.id)] == [
        "voice.unmute", "voice.mute"]


async def test_disconnect_and_move_checks(server: RunningServer, http: aiohttp.ClientSession,
                                          crew: Crew, voice: int) -> None:
    cid, mod, member = crew.community_id, crew.mod.ws, crew.member.ws
    other = await create_channel(http, server, crew, "quiet", "voice")
    await mod.event("channel_create")
    reply = await member.request("voice_disconnect", channel_id=voice,
                                 user_id=crew.members[1].id)
    assert reply["code"] == "forbidden", reply
    # not in the room: nothing to do, nothing audited
    reply = await mod.request("voice_disconnect", channel_id=voice, user_id=crew.member.id)
    assert reply["code"] == "not_found", reply
    reply = await mod.request("voice_move", channel_id=voice, user_id=crew.member.id,
                              to_channel_id=crew.general)
    assert reply["code"] == "invalid_argument", reply
    reply = await mod.request("voice_move", channel_id=voice, user_id=crew.member.id,
                              to_channel_id=voice)
    assert reply["code"] == "invalid_argument", reply
    reply = await mod.request("voice_move", channel_id=voice, user_id=crew.member.id,
                              to_channel_id=other["id"])
    assert reply["code"] == "not_found", reply
    reply = await mod.request("voice_move", channel_id=voice, user_id=crew.admin.id,
                              to_channel_id=other["id"])
    assert reply["code"] == "forbidden", reply
    actions = {e["action"] for e in await audit(crew.owner.ws, cid)}
    assert not actions & {"voice.disconnect", "voice.move"}


async def test_custom_role_grants_mute_members(crew: Crew, voice: int) -> None:
    """The new bits are ordinary permission bits: a custom role carrying MUTE_MEMBERS
    lets a plain member mute members below it, and no more (no MOVE_MEMBERS)."""
    cid, admin = crew.community_id, crew.admin.ws
    helper, plain = crew.members[0], crew.members[1]
    role = (await admin.ok("create_role", community_id=cid, name="voice helper",
                           position=10, permissions=int(P.MUTE_MEMBERS)))["role"]
    await admin.ok("set_member_roles", community_id=cid, user_id=helper.id,
                   role_ids=[role["id"]])
    await helper.ws.event("permissions_update")
    reply = await eventually(helper.ws, "voice_server_mute", "ok", channel_id=voice,
                             user_id=plain.id)
    assert reply["op"] == "ok", reply
    reply = await helper.ws.request("voice_disconnect", channel_id=voice, user_id=plain.id)
    assert reply["code"] == "forbidden", reply
    reply = await helper.ws.request("voice_server_mute", channel_id=voice, user_id=crew.mod.id)
    assert reply["code"] == "forbidden", reply


async def test_server_mute_needs_mute_members_community_wide(crew: Crew, voice: int) -> None:
    """A channel override granting MUTE_MEMBERS makes a moderator of that one channel;
    the server mute is stored per community and silences the member in every voice
    room, so it is refused to them (their disconnect rights there are untouched)."""
    owner, helper, target = crew.owner.ws, crew.members[0], crew.members[1]
    # A role without voice bits ranks the helper above plain members ...
    role = (await owner.ok("create_role", community_id=crew.community_id, name="helper",
                           position=10, permissions=0))["role"]
    await owner.ok("set_member_roles", community_id=crew.community_id, user_id=helper.id,
                   role_ids=[role["id"]])
    await helper.ws.event("permissions_update")
    # ... and one channel's override gives them the voice bits there.
    await owner.ok("set_channel_override", channel_id=voice, kind="member",
                   target_id=helper.id, allow=int(P.MUTE_MEMBERS | P.MOVE_MEMBERS))
    await helper.ws.event("permissions_update")
    # The override is seen (disconnect, a channel-scoped action, gets past the
    # permission check to "not in the room") ...
    reply = await eventually(helper.ws, "voice_disconnect", "not_found", channel_id=voice,
                             user_id=target.id)
    assert reply["code"] == "not_found", reply
    # ... but a community-wide mute is not granted by it.
    reply = await helper.ws.request("voice_server_mute", channel_id=voice, user_id=target.id)
    assert reply.get("code") == "forbidden", reply
    assert await audit(owner, crew.community_id, action="voice.mute") == []
    # A moderator (MUTE_MEMBERS from their role) still mutes.
    await crew.mod.ws.ok("voice_server_mute", channel_id=voice, user_id=target.id)


async def test_voice_joins_are_rate_limited_per_member(database_url: str,
                                                       http: aiohttp.ClientSession) -> None:
    """Each join costs a media worker a handshake: beyond ``voice_joins_per_window`` a
    member's joins are refused, from any of their connections, with the time to wait;
    another member is unaffected."""
    async with app_server(database_url, media_workers=0,
                          limits={"voice_joins_per_window": 2}) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=2, mods=0)
        channel = (await create_channel(http, srv, crew, "lounge", "voice"))["id"]
        for person in crew.members:
            await person.ws.event("channel_create")
        member, other = crew.members
        for _ in range(2):  # allowed; they get as far as the (absent) media workers
            reply = await member.ws.request("voice_join", channel_id=channel, sdp=OFFER)
            assert reply["code"] == "voice_unavailable", reply
        second = await GatewayClient.identified(http, srv.ws_url, member.token)
        for client in (member.ws, second):
            reply = await client.request("voice_join", channel_id=channel, sdp=OFFER)
            assert reply["code"] == "rate_limited", reply
            assert 0 < reply["retry_after_ms"] <= 30_000, reply
        reply = await other.ws.request("voice_join", channel_id=channel, sdp=OFFER)
        assert reply["code"] == "voice_unavailable", reply


async def test_a_lowered_max_sdp_chars_is_enforced(database_url: str,
                                                   http: aiohttp.ClientSession) -> None:
    """``limits.max_sdp_chars`` is sent in hello; an operator lowering it holds joins to
    the lowered value (the schema alone only knows the default)."""
    async with app_server(database_url, media_workers=0,
                          limits={"max_sdp_chars": len(OFFER) + 10}) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=1, mods=0)
        channel = (await create_channel(http, srv, crew, "lounge", "voice"))["id"]
        member = crew.member.ws
        await member.event("channel_create")
        long_offer = OFFER + "a=x-padding:" + "p" * 20 + "\r\n"
        reply = await member.request("voice_join", channel_id=channel, sdp=long_offer)
        assert reply["code"] == "invalid_frame", reply
        assert "max_sdp_chars" in reply["message"], reply
        reply = await member.request("voice_join", channel_id=channel, sdp=OFFER)
        assert reply["code"] == "voice_unavailable", reply  # within it: on to the media
