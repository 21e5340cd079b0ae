"""Live sessions over real websockets, PostgreSQL and the REST API: scheduling and its
transitions, permissions and prerequisites, the stage (hands, promotion, limits), Q&A
(ordering, moderation), attendance totals and reminders.

Here attendance is driven through AttendanceLog.note_join/note_leave, the very methods
the voice hooks call, so that intervals (before the start, rejoin, still in at the end)
are exact; promotions are observed through a recording StageVoice put in the place of
the voice rooms the service was built with. The same paths with real
voice joins, real media and a real recording: tests/test_live_media.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rooms.voice.live import LiveService
from server.app import SERVICES
from tests.conftest import RunningServer, app_server
from tests.helpers import bearer, register
from tests.mod_helpers import Crew, make_crew


@pytest.fixture
async def live_server(database_url: str) -> AsyncIterator[RunningServer]:
    """The shared fixture's server, with reminders looked for every 0.2 s."""
    async with app_server(database_url, live_reminder_every_s=0.2) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def service(server: RunningServer) -> LiveService:
    assert isinstance(server.app, web.Application)
    return server.app[SERVICES].live


class RecordingVoice:
    """Stands in for rooms/voice/voice.py's VoiceService as the stage's StageVoice: records
    set_role calls."""

    def __init__(self) -> None:
        self.roles: list[tuple[int, int, bool]] = []

    async def set_role(self, channel_id: int, user_id: int, speaker: bool) -> None:
        self.roles.append((channel_id, user_id, speaker))


class Api:
    def __init__(self, http: aiohttp.ClientSession, server: RunningServer, crew: Crew) -> None:
        self.http = http
        self.base = f"{server.url}/api/v1/communities/{crew.community_id}/live-sessions"

    async def call(self, method: str, token: str, path: str = "",
                   body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers=bearer(token)) as reply:
            return reply.status, dict(await reply.json())

    async def create(self, token: str, **fields: Any) -> dict[str, Any]:
        fields.setdefault("title", "Office hours")
        fields.setdefault("starts_at", int(time.time() * 1000) + 3_600_000)
        status, body = await self.call("POST", token, "", fields)
        assert status == 201, body
        return dict(body["session"])


@pytest.fixture
async def crew(live_server: RunningServer, http: aiohttp.ClientSession) -> Crew:
    return await make_crew(http, live_server.url, live_server.ws_url, members=3)


@pytest.fixture
def api(http: aiohttp.ClientSession, live_server: RunningServer, crew: Crew) -> Api:
    return Api(http, live_server, crew)


# ------------------------------------------------------------------------ scheduling


async def test_schedule_start_end_and_refused_transitions(crew: Crew, api: Api) -> None:
    host, member, listener = crew.mod, crew.members[0], crew.members[1]
    status, body = await api.call("POST", member.token, "", {
        "title": "x", "starts_at": int(time.time() * 1000) + 60_000})
    assert status == 403, body
    session = await api.create(crew.admin.token, host_id=host.id, title="Ask me anything",
                               prerequisite_course="Intro 101")
    sid = session["id"]
    assert session["state"] == "scheduled" and session["host_id"] == host.id
    assert session["prerequisite_course"] == "Intro 101"
    # Members learn of the stage channel, then of the session on it.
    created = await listener.ws.event("channel_create")
    assert created["channel"]["kind"] == "stage"
    assert created["channel"]["id"] == session["channel_id"]
    update = await listener.ws.event("live_session_update")
    assert update["session"]["id"] == sid
    # Only the host, a co-host or a channel manager runs it; transitions are checked.
    status, body = await api.call("POST", member.token, f"/{sid}/start")
    assert status == 403, body
    status, body = await api.call("POST", host.token, f"/{sid}/end")
    assert status == 409 and body["error"]["code"] == "conflict", body
    status, body = await api.call("POST", host.token, f"/{sid}/start")
    assert status == 200 and body["session"]["state"] == "live", body
    assert body["session"]["started_at"] is not None
    update = await listener.ws.event("live_session_update")
    assert update["session"]["state"] == "live"
    for action in ("start", "cancel"):
        status, body = await api.call("POST", host.token, f"/{sid}/{action}")
        assert status == 409, (action, body)
    status, body = await api.call("POST", member.token, f"/{sid}/end")
    assert status == 403, body
    status, body = await api.call("POST", host.token, f"/{sid}/end")
    assert status == 200 and body["session"]["state"] == "ended", body
    assert (await listener.ws.event("live_session_update"))["session"]["state"] == "ended"
    status, body = await api.call("POST", crew.admin.token, f"/{sid}/end")
    assert status == 409, body
    status, body = await api.call("PATCH", host.token, f"/{sid}", {"title": "late"})
    assert status == 409, body
    # Cancel: only from scheduled; an admin (MANAGE_CHANNELS) may do it too.
    other = await api.create(crew.admin.token, host_id=host.id)
    status, body = await api.call("POST", crew.admin.token, f"/{other['id']}/cancel")
    assert status == 200 and body["session"]["state"] == "cancelled", body
    status, body = await api.call("POST", host.token, f"/{other['id']}/start")
    assert status == 409, body
    # Listing and the audit log.
    status, body = await api.call("GET", member.token, "?state=cancelled")
    assert status == 200 and [s["id"] for s in body["sessions"]] == [other["id"]]
    entries = (await crew.admin.ws.ok("fetch_audit_log", community_id=crew.community_id,
                                      action="live_session."))["entries"]
    assert [e["action"] for e in entries] == [
        "live_session.cancelled", "live_session.create", "live_session.ended",
        "live_session.live", "live_session.create"]


async def test_registration_tier_capacity_and_strangers(crew: Crew, api: Api,
                                                        http: aiohttp.ClientSession,
                                                        live_server: RunningServer) -> None:
    a, b = crew.members[0], crew.members[1]
    session = await api.create(crew.admin.token, required_tier=2, capacity=1)
    sid = session["id"]
    status, body = await api.call("POST", a.token, f"/{sid}/register")
    assert status == 403 and "tier 2" in body["error"]["message"], body
    for person in (a, b):
        async with http.put(f"{live_server.url}/api/v1/communities/{crew.community_id}"
                            f"/members/{person.id}/tier", json={"tier": 2},
                            headers=bearer(crew.admin.token)) as reply:
            assert reply.status == 200, await reply.text()
    status, body = await api.call("POST", a.token, f"/{sid}/register")
    assert status == 200 and body["session"]["registered_count"] == 1, body
    status, body = await api.call("POST", a.token, f"/{sid}/register")  # idempotent
    assert status == 200 and body["session"]["registered_count"] == 1, body
    status, body = await api.call("POST", b.token, f"/{sid}/register")
    assert status == 409 and body["error"]["code"] == "limit_exceeded", body
    status, body = await api.call("DELETE", a.token, f"/{sid}/register")
    assert status == 200 and body["session"]["registered_count"] == 0, body
    status, body = await api.call("POST", b.token, f"/{sid}/register")
    assert status == 200, body
    stranger = await register(http, live_server.url)
    status, body = await api.call("POST", stranger["access_token"], f"/{sid}/register")
    assert status == 404, body
    status, body = await api.call("GET", stranger["access_token"], f"/{sid}")
    assert status == 404, body


# ----------------------------------------------------------------------------- stage


async def test_raise_hand_promote_and_the_speaker_limit(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    crew = await make_crew(http, live_server.url, live_server.ws_url, members=5)
    api = Api(http, live_server, crew)
    voice = RecordingVoice()
    service(live_server).stage.voice = voice
    host = crew.mod
    session = await api.create(crew.admin.token, host_id=host.id)
    sid, channel_id = session["id"], session["channel_id"]
    asker, listener, outsider = crew.members[0], crew.members[1], crew.members[2]
    reply = await asker.ws.request("stage_raise_hand", session_id=sid)
    assert reply["code"] == "conflict", reply  # not live yet
    status, _ = await api.call("POST", host.token, f"/{sid}/start")
    assert status == 200
    assert voice.roles == [(channel_id, host.id, True)]
    await asker.ws.ok("stage_raise_hand", session_id=sid)
    update = await listener.ws.event("stage_update", hands=[asker.id])
    assert update["speakers"] == [host.id] and update["session_id"] == sid
    reply = await outsider.ws.request("stage_set_speaker", session_id=sid, user_id=asker.id,
                                      speaker=True)
    assert reply["code"] == "forbidden", reply
    data = await host.ws.ok("stage_set_speaker", session_id=sid, user_id=asker.id,
                            speaker=True)
    assert data["stage"]["speakers"] == [host.id, asker.id] and data["stage"]["hands"] == []
    update = await listener.ws.event("stage_update", speakers=[host.id, asker.id])
    assert update["hands"] == []
    assert voice.roles[-1] == (channel_id, asker.id, True)
    # The limit counts the host: 8 on stage, the next is refused.
    others = [p for p in crew.everyone() if p.id not in (host.id, asker.id)]
    for person in others[:6]:
        await host.ws.ok("stage_set_speaker", session_id=sid, user_id=person.id, speaker=True)
    reply = await host.ws.request("stage_set_speaker", session_id=sid, user_id=others[6].id,
                                  speaker=True)
    assert reply["code"] == "limit_exceeded", reply
    # A speaker steps down on their own; the host cannot be demoted.
    data = await asker.ws.ok("stage_set_speaker", session_id=sid, user_id=asker.id,
                             speaker=False)
    assert asker.id not in data["stage"]["speakers"]
    assert voice.roles[-1] == (channel_id, asker.id, False)
    reply = await crew.admin.ws.request("stage_set_speaker", session_id=sid, user_id=host.id,
                                        speaker=False)
    assert reply["code"] == "invalid_argument", reply
    # Co-hosts: named by the host; they may promote.
    reply = await asker.ws.request("stage_set_cohost", session_id=sid, user_id=asker.id,
                                   cohost=True)
    assert reply["code"] == "forbidden", reply
    data = await host.ws.ok("stage_set_cohost", session_id=sid, user_id=asker.id, cohost=True)
    assert data["stage"]["cohosts"] == [asker.id]
    await asker.ws.ok("stage_set_speaker", session_id=sid, user_id=others[0].id,
                      speaker=False)
    stage = (await listener.ws.ok("stage_fetch", session_id=sid))["stage"]
    assert stage["cohosts"] == [asker.id] and others[0].id not in stage["speakers"]
    assert len(stage["speakers"]) == 7


# ------------------------------------------------------------------------------- Q&A


async def test_questions_votes_order_and_moderation(crew: Crew, api: Api,
                                                   http: aiohttp.ClientSession,
                                                   live_server: RunningServer) -> None:
    host = crew.mod
    session = await api.create(crew.admin.token, host_id=host.id)
    sid = session["id"]
    a, b, c = crew.members
    q1 = (await a.ws.ok("qa_ask", session_id=sid, text="first?"))["question"]
    q2 = (await b.ws.ok("qa_ask", session_id=sid, text="second?"))["question"]
    q3 = (await c.ws.ok("qa_ask", session_id=sid, text="third?"))["question"]
    seen = await host.ws.event("qa_update", question=q3)
    assert seen["question"]["votes"] == 0
    for voter in (a, b):
        await voter.ws.ok("qa_vote", question_id=q3["id"])
    data = await c.ws.ok("qa_vote", question_id=q2["id"])
    assert data["question"]["votes"] == 1 and data["voted"] is True
    again = await c.ws.ok("qa_vote", question_id=q2["id"])  # once per member
    assert again["question"]["votes"] == 1
    data = await a.ws.ok("qa_fetch", session_id=sid)
    assert [q["id"] for q in data["questions"]] == [q3["id"], q2["id"], q1["id"]]
    assert [q["votes"] for q in data["questions"]] == [2, 1, 0]
    assert data["voted_ids"] == [q3["id"]]
    await a.ws.ok("qa_vote", question_id=q3["id"], vote=False)
    await b.ws.ok("qa_vote", question_id=q1["id"])
    await a.ws.ok("qa_vote", question_id=q1["id"])
    data = await a.ws.ok("qa_fetch", session_id=sid)
    # q1 (2 votes) first; q3 and q2 have 1 each: the older first.
    assert [q["id"] for q in data["questions"]] == [q1["id"], q2["id"], q3["id"]]
    # Answer and dismiss: hosts and moderators only.
    reply = await a.ws.request("qa_set_state", question_id=q2["id"], state="answered")
    assert reply["code"] == "forbidden", reply
    data = await host.ws.ok("qa_set_state", question_id=q2["id"], state="answered")
    assert data["question"]["state"] == "answered"
    assert data["question"]["resolved_by"] == host.id
    await crew.mods[1].ws.ok("qa_set_state", question_id=q3["id"], state="dismissed")
    dismissed = await a.ws.event("qa_update", question={**q3, "votes": 1, "state": "dismissed",
                                                         "resolved_by": crew.mods[1].id,
                                                         "text": ""})
    assert dismissed
    member_view = await a.ws.ok("qa_fetch", session_id=sid)
    assert [q["id"] for q in member_view["questions"]] == [q1["id"], q2["id"]]
    host_view = await host.ws.ok("qa_fetch", session_id=sid)
    assert {q["id"] for q in host_view["questions"]} == {q1["id"], q2["id"], q3["id"]}
    async with http.get(f"{api.base}/{sid}/questions", headers=bearer(a.token)) as response:
        body = await response.json()
        assert response.status == 200 and [q["id"] for q in body["questions"]] \
            == [q1["id"], q2["id"]], body
    # Automod: a blocking rule refuses the question; nothing is stored.
    async with http.post(f"{live_server.url}/api/v1/communities/{crew.community_id}"
                         "/automod/rules", headers=bearer(crew.owner.token),
                         json={"name": "no spoilers", "actions": ["block"],
                               "trigger": {"type": "keyword", "keywords": ["spoiler*"]}}) as r:
        assert r.status == 201, await r.text()
    reply = await b.ws.request("qa_ask", session_id=sid, text="any spoilers today?")
    assert reply["code"] == "automod_blocked", reply
    # A timed-out member cannot ask (nor vote); others still can.
    await host.ws.ok("timeout_member", community_id=crew.community_id, user_id=c.id,
                     duration_s=300, reason="cool off")
    await c.ws.event("member_sanctioned")
    reply = await c.ws.request("qa_ask", session_id=sid, text="can I still ask?")
    assert reply["code"] == "timed_out", reply
    reply = await c.ws.request("qa_vote", question_id=q1["id"])
    assert reply["code"] == "timed_out", reply
    await b.ws.ok("qa_ask", session_id=sid, text="fine question")
    data = await host.ws.ok("qa_fetch", session_id=sid)
    texts = [q["text"] for q in data["questions"]]
    assert "any spoilers today?" not in texts and "can I still ask?" not in texts
    assert "fine question" in texts
    # Limits: length and rate.
    reply = await a.ws.request("qa_ask", session_id=sid, text="x" * 501)
    assert reply["code"] == "content_too_long", reply
    codes = [(await a.ws.request("qa_ask", session_id=sid, text=f"q{i}"))["op"]
             for i in range(6)]
    last = await a.ws.request("qa_ask", session_id=sid, text="one more")
    assert "error" in codes or last["code"] == "rate_limited", (codes, last)
    # After the end nothing more is asked.
    await api.call("POST", host.token, f"/{sid}/start")
    await api.call("POST", host.token, f"/{sid}/end")
    reply = await b.ws.request("qa_ask", session_id=sid, text="too late")
    assert reply["code"] == "conflict", reply


# ------------------------------------------------------------------------ attendance


@pytest.mark.slow
async def test_attendance_totals_with_rejoin_registered_attended_missed(
        crew: Crew, api: Api, live_server: RunningServer) -> None:
    live = service(live_server)
    join, leave = live.attendance_log.note_join, live.attendance_log.note_leave
    host = crew.mod
    a, b, c = crew.members
    session = await api.create(crew.admin.token, host_id=host.id)
    sid, channel_id = session["id"], session["channel_id"]
    for person in (a, b):
        status, _ = await api.call("POST", person.token, f"/{sid}/register")
        assert status == 200
    # Joining before the start counts from the start.
    join(channel_id, a.id, dt.datetime.now(dt.UTC))
    join(999_999_999, a.id, time.time())  # not a stage: ignored
    await asyncio.sleep(0.3)
    status, _ = await api.call("POST", host.token, f"/{sid}/start")
    assert status == 200
    t0 = time.monotonic()
    join(channel_id, c.id, time.time())  # walked in without registering
    await asyncio.sleep(1.0)
    leave(channel_id, a.id, time.time())  # a: 1.0 s
    await asyncio.sleep(0.5)
    join(channel_id, a.id, dt.datetime.now(dt.UTC))
    await asyncio.sleep(1.0)
    leave(channel_id, a.id, dt.datetime.now(dt.UTC))  # a: + 1.0 s
    await asyncio.sleep(0.2)
    status, _ = await api.call("POST", host.token, f"/{sid}/end")  # c still in: closed here
    elapsed = time.monotonic() - t0
    assert status == 200
    status, report = await api.call("GET", host.token, f"/{sid}/attendance")
    assert status == 200, report
    by_user = {x["user_id"]: x for x in report["attendees"]}
    assert abs(by_user[a.id]["total_s"] - 2.0) < 1.0, by_user[a.id]
    assert abs(by_user[a.id]["total_s"] - 2.0) < 0.3, by_user[a.id]  # in practice
    assert len(by_user[a.id]["intervals"]) == 2
    assert all(i["left_at"] is not None for i in by_user[a.id]["intervals"])
    assert abs(by_user[c.id]["total_s"] - elapsed) < 0.3, (by_user[c.id], elapsed)
    assert by_user[c.id]["registered"] is False
    assert by_user[b.id]["total_s"] == 0 and by_user[b.id]["registered"] is True
    assert report["registered"] == sorted([a.id, b.id])
    assert report["attended"] == sorted([a.id, c.id])
    assert report["missed"] == [b.id]
    assert live.attendance_log.notes_dropped == 0
    assert live.attendance_log.attendance_batches >= 1
    # Only the host, co-hosts and managers read it.
    status, body = await api.call("GET", a.token, f"/{sid}/attendance")
    assert status == 403, body


# ------------------------------------------------------------------------- reminders


async def test_reminder_reaches_registered_members_only(crew: Crew, api: Api) -> None:
    a, b = crew.members[0], crew.members[1]
    now = int(time.time() * 1000)
    later = await api.create(crew.admin.token, title="Much later", starts_at=now + 7_200_000)
    soon = await api.create(crew.admin.token, title="Soon", starts_at=now + 300_000)
    for sid in (later["id"], soon["id"]):
        status, _ = await api.call("POST", a.token, f"/{sid}/register")
        assert status == 200
    reminder = await a.ws.event("live_session_reminder", timeout=5)
    assert reminder["session"]["id"] == soon["id"]
    assert 250 <= reminder["starts_in_s"] <= 300
    await b.ws.no_event("live_session_reminder", wait=0.6)
    await a.ws.no_event("live_session_reminder", wait=0.6)  # once; not the later one
    # Moving a session's start re-arms its reminder.
    status, body = await api.call("PATCH", crew.admin.token, f"/{later['id']}",
                                  {"starts_at": now + 120_000})
    assert status == 200, body
    reminder = await a.ws.event("live_session_reminder", timeout=5)
    assert reminder["session"]["id"] == later["id"]


async def test_a_session_not_recorded_stores_no_recording(crew: Crew, api: Api) -> None:
    """(A recorded session's file and its contents: tests/test_live_media.py.)"""
    plain = await api.create(crew.admin.token)
    await api.call("POST", crew.admin.token, f"/{plain['id']}/start")
    status, body = await api.call("POST", crew.admin.token, f"/{plain['id']}/end")
    assert status == 200, body
    assert body["session"]["recording_path"] is None
    assert body["session"]["recording_s"] in (None, 0, 0.0)


async def test_cohost_cannot_take_over_or_change_the_stage_gate(crew: Crew, api: Api) -> None:
    """A co-host edits the session but cannot make themselves host (a host names
    co-hosts), nor change the stage channel's tier gate or the recording: those need
    the host (host_id) or MANAGE_CHANNELS."""
    host, cohost = crew.members[0], crew.members[1]
    sid = (await api.create(crew.admin.token, host_id=host.id))["id"]
    await host.ws.ok("stage_set_cohost", session_id=sid, user_id=cohost.id, cohost=True)
    for body in ({"host_id": cohost.id}, {"required_tier": 0}, {"recorded": True}):
        status, reply = await api.call("PATCH", cohost.token, f"/{sid}", body)
        assert status == 403, (body, reply)
    status, reply = await api.call("PATCH", cohost.token, f"/{sid}", {"title": "Renamed"})
    assert status == 200 and reply["session"]["title"] == "Renamed", reply
    # The host may not change the gate either, but may hand the session over.
    status, reply = await api.call("PATCH", host.token, f"/{sid}", {"recorded": True})
    assert status == 403, reply
    status, reply = await api.call("PATCH", host.token, f"/{sid}", {"host_id": cohost.id})
    assert status == 200 and reply["session"]["host_id"] == cohost.id, reply
    status, reply = await api.call("PATCH", crew.admin.token, f"/{sid}",
                                   {"required_tier": 1, "recorded": True})
    assert status == 200 and reply["session"]["recorded"] is True, reply


async def test_refused_end_and_attendance_do_not_wait_for_the_attendance_writer(
        crew: Crew, api: Api, live_server: RunningServer) -> None:
    """``end`` and the attendance report flush the attendance queue; a member who may do
    neither is refused first, without making the server flush (here: without waiting
    for a writer that is busy)."""
    host, member = crew.mod, crew.members[0]
    session = await api.create(crew.admin.token, host_id=host.id)
    sid = session["id"]
    status, body = await api.call("POST", host.token, f"/{sid}/start")
    assert status == 200, body
    live = service(live_server)
    async with live.attendance_log._write_lock:  # the writer is busy with a batch
        live.attendance_log.note_join(session["channel_id"], member.id, time.time())
        for method, path in (("POST", f"/{sid}/end"), ("GET", f"/{sid}/attendance")):
            status, body = await asyncio.wait_for(api.call(method, member.token, path), 3)
            assert status == 403, body
    status, body = await api.call("POST", host.token, f"/{sid}/end")
    assert status == 200, body


async def test_raised_hands_are_bounded(database_url: str,
                                        http: aiohttp.ClientSession) -> None:
    async with app_server(database_url, limits={"max_stage_hands": 1}) as srv:
        crew = await make_crew(http, srv.url, srv.ws_url, members=2)
        api = Api(http, srv, crew)
        session = await api.create(crew.admin.token, host_id=crew.mod.id)
        status, _ = await api.call("POST", crew.mod.token, f"/{session['id']}/start")
        assert status == 200
        first, second = crew.members
        await first.ws.ok("stage_raise_hand", session_id=session["id"])
        reply = await second.ws.request("stage_raise_hand", session_id=session["id"])
        assert reply["code"] == "limit_exceeded", reply
        await first.ws.ok("stage_raise_hand", session_id=session["id"], raised=False)
        data = await second.ws.ok("stage_raise_hand", session_id=session["id"])
        assert data["stage"]["hands"] == [second.id]


async def test_a_member_registering_after_the_reminders_is_reminded_at_once(
        crew: Crew, api: Api, live_server: RunningServer) -> None:
    a, b = crew.members[0], crew.members[1]
    soon = await api.create(crew.admin.token, title="Soon",
                            starts_at=int(time.time() * 1000) + 120_000)
    status, _ = await api.call("POST", a.token, f"/{soon['id']}/register")
    assert status == 200
    reminder = await a.ws.event("live_session_reminder", timeout=5)  # the regular round
    assert reminder["session"]["id"] == soon["id"]
    status, _ = await api.call("POST", b.token, f"/{soon['id']}/register")  # too late for it
    assert status == 200
    late = await b.ws.event("live_session_reminder", timeout=2)
    assert late["session"]["id"] == soon["id"] and 60 <= late["starts_in_s"] <= 120
    await a.ws.no_event("live_session_reminder", wait=0.6)  # the others are not reminded again
