"""The courses sidecar end to end (real server, PostgreSQL, websockets): enrolment,
lessons, drip, quizzes graded on the server, assignments, certificates, the xAPI export,
access pausing and resuming enrolments, and live-session prerequisites."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import RunningServer
from tests.course_helpers import Api
from tests.helpers import GatewayClient


@pytest.fixture
async def api(live_server: RunningServer) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, live_server)


def keys_of(value: Any) -> set[str]:
    """Every key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


async def quiz_lesson(api: Api, course_id: int, module_id: int, **settings: Any) -> int:
    lesson = await api.lesson(course_id, module_id, kind="quiz", title="Quiz",
                              quiz={"pass_percent": 60, **settings})
    path = api.courses(f"/{course_id}/lessons/{lesson}/questions")
    for body in (
            {"kind": "single", "prompt": "2+2?", "choices": ["3", "4", "5"],
             "correct_choices": [1], "points": 2},
            {"kind": "multiple", "prompt": "Primes?", "choices": ["2", "4", "5", "9"],
             "correct_choices": [0, 2]},
            {"kind": "true_false", "prompt": "The sky is green.", "correct_choices": [1]},
            {"kind": "short", "prompt": "Capital of France?",
             "accepted_answers": ["Paris"]}):
        await api.ok("owner", "POST", path, body)
    return lesson


def right_answers(started: dict[str, Any]) -> list[dict[str, Any]]:
    """The right answers for the questions of :func:`quiz_lesson`, by the choices as the
    attempt shows them (whatever their shuffle)."""
    truth = {"2+2?": {"4"}, "Primes?": {"2", "5"}, "The sky is green.": {"false"}}
    answers = []
    for q in started["questions"]:
        if q["kind"] == "short":
            answers.append({"question_id": q["id"], "text": "  paris. "})
        else:
            answers.append({"question_id": q["id"], "choices": [
                i for i, c in enumerate(q["choices"]) if c in truth[q["prompt"]]]})
    return answers


async def test_enrol_learn_quiz_complete_and_certificate(api: Api) -> None:
    await api.setup(members=("learner",))
    course_id = await api.course(certificate=True)
    m1 = await api.module(course_id, position=1)
    m2 = await api.module(course_id, position=2, drip="after_previous")
    text = await api.lesson(course_id, m1, title="Intro", body="# Hello", preview=True)
    quiz = await quiz_lesson(api, course_id, m1, shuffle_answers=True, shuffle_questions=True)
    last = await api.lesson(course_id, m2, title="Outro", kind="video",
                            media_url="https://v.example/1.mp4", duration_s=100)
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
        states = {lesson["id"]: lesson["state"] for m in outline["modules"]
                  for lesson in m["lessons"]}
        assert states == {text: "available", quiz: "locked", last: "locked"}
        assert outline["enrolment"] is None
        status, body = await api.call("learner", "GET", api.courses(f"/{course_id}/lessons/{quiz}"))
        assert status == 403 and body["error"]["code"] == "forbidden", body
        enrolment = (await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment")))
        assert enrolment["enrolment"]["state"] == "active"
        got = await client.event("enrolment_updated", course_id=course_id, timeout=10)
        assert got["state"] == "active"
        done = await api.ok("learner", "POST",
                            api.courses(f"/{course_id}/lessons/{text}/complete"))
        assert done["state"] == "completed" and done["progress_percent"] == 33
        # a quiz read never carries an answer
        lesson = await api.ok("learner", "GET", api.courses(f"/{course_id}/lessons/{quiz}"))
        assert lesson["questions"] is None and lesson["lesson"]["question_count"] == 4
        started = await api.ok("learner", "POST",
                               api.courses(f"/{course_id}/lessons/{quiz}/attempts"))
        leaked = keys_of(started) & {"correct", "correct_choices", "accepted_answers"}
        assert not leaked, started
        assert "Paris" not in json.dumps(started)
        # the video of module 2 is locked until the quiz is passed
        status, _ = await api.call("learner", "POST", api.courses(f"/{course_id}/progress"),
                                   {"items": [{"lesson_id": last, "watched_s": 10}]})
        assert status == 403
        result = await api.ok("learner", "POST", api.courses(
            f"/{course_id}/lessons/{quiz}/attempts/{started['attempt_id']}/submit"),
            {"answers": right_answers(started)})
        assert result["passed"] and result["score"] == result["max_score"] == 5, result
        assert all(r["correct"] for r in result["results"])
        graded = await client.event("quiz_graded", lesson_id=quiz, timeout=10)
        assert graded["passed"] and graded["score"] == 5
        unlocked = await client.event("lesson_unlocked", course_id=course_id, timeout=10)
        assert unlocked["reason"] == "previous_completed" and unlocked["lesson_ids"] == [last]
        # submitting twice is refused
        status, body = await api.call("learner", "POST", api.courses(
            f"/{course_id}/lessons/{quiz}/attempts/{started['attempt_id']}/submit"),
            {"answers": []})
        assert status == 409, body
        # heartbeats, then completing the video
        for watched in (10, 60, 40):
            reply = await api.ok("learner", "POST", api.courses(f"/{course_id}/progress"),
                                 {"items": [{"lesson_id": last, "watched_s": watched,
                                             "position_s": watched, "time_spent_s": 10}]})
            assert reply["accepted"] == 1
        outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
        video = outline["modules"][1]["lessons"][0]
        assert video["watched_percent"] == 60 and video["time_spent_s"] == 30
        assert video["state"] == "in_progress"
        done = await api.ok("learner", "POST",
                            api.courses(f"/{course_id}/lessons/{last}/complete"))
        assert done["course_completed"] and done["progress_percent"] == 100
        serial = done["certificate_serial"]
        completed = await client.event("course_completed", course_id=course_id, timeout=10)
        assert completed["certificate_serial"] == serial
    finally:
        await client.close()
    # the public verification, the PDF, then a revocation
    cert = await api.ok(None, "GET", f"/certificates/{serial}")
    assert cert["certificate"]["valid"] and cert["certificate"]["course_title"] == "Course"
    status, pdf = await api.call(None, "GET", f"/certificates/{serial}/pdf")
    assert status == 200 and pdf[:5] == b"%PDF-", pdf[:20]
    mine = await api.ok("learner", "GET", api.courses(f"/{course_id}/certificate"))
    assert mine["certificate"]["serial"] == serial
    status, _ = await api.call("learner", "POST",
                               f"/communities/{api.cid}/certificates/{serial}/revoke",
                               {"reason": "no"})
    assert status == 403
    await api.ok("owner", "POST", f"/communities/{api.cid}/certificates/{serial}/revoke",
                 {"reason": "copied the quiz"})
    cert = await api.ok(None, "GET", f"/certificates/{serial}")
    assert not cert["certificate"]["valid"]
    assert cert["certificate"]["revoked_reason"] == "copied the quiz"
    status, body = await api.call(None, "GET", "/certificates/AAAA-AAAA-AAAA-AAAA")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.call(None, "GET", "/certificates/nope")
    assert status == 404, body
    # the xAPI export
    export = await api.ok("owner", "GET", api.courses(f"/{course_id}/statements"))
    verbs = [s["verb"]["display"]["en-US"] for s in export["statements"]]
    assert verbs[0] == "enrolled" and "passed" in verbs and "earned" in verbs
    assert verbs.count("completed") == 3  # the text, the video, and the course
    passed = next(s for s in export["statements"] if s["verb"]["display"]["en-US"] == "passed")
    assert passed["actor"]["account"]["name"] == f"user:{api.uid('learner')}"
    assert passed["verb"]["id"] == "http://adlnet.gov/expapi/verbs/passed"
    assert passed["object"]["id"] == f"urn:hearth:course:{course_id}:quiz:{quiz}"
    assert passed["result"]["score"] == {"raw": 5, "max": 5, "scaled": 1.0}
    assert passed["result"]["success"] is True
    assert passed["timestamp"].endswith("Z") and len(passed["id"]) == 36
    video_done = [s for s in export["statements"] if s["object"]["id"].endswith(
        f":lesson:{last}")]
    assert video_done[0]["result"] == {"completion": True, "duration": "PT30S"}
    status, _ = await api.call("learner", "GET", api.courses(f"/{course_id}/statements"))
    assert status == 403
    # the same actions reached the outbox as learner_statement events
    conn = await asyncpg.connect(api.server.database_url)
    try:
        rows = await conn.fetch("SELECT payload FROM outbox_events"
                                " WHERE type = 'learner_statement' ORDER BY id")
    finally:
        await conn.close()
    events = [json.loads(r["payload"]) for r in rows]
    assert [e["verb"] for e in events] == verbs
    assert events[0]["user_id"] == api.uid("learner") and events[0]["course_id"] == course_id


async def test_quiz_limits_pools_and_time(api: Api) -> None:
    """Attempt limits, question pools drawn per attempt, wrong answers graded wrong, a
    late submission scored 0 (the rule: deadline + 5 s grace)."""
    await api.setup(members=("learner",))
    course_id = await api.course()
    module = await api.module(course_id)
    quiz = await quiz_lesson(api, course_id, module, max_attempts=3, pool_size=2,
                             time_limit_s=10)
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    attempts = api.courses(f"/{course_id}/lessons/{quiz}/attempts")
    first = await api.ok("learner", "POST", attempts)
    assert len(first["questions"]) == 2 and first["attempts_left"] == 2
    assert first["deadline"] - first["started_at"] == 10_000
    wrong = [{"question_id": q["id"], "choices": [], "text": None if q["kind"] != "short"
              else "Lyon"} for q in first["questions"]]
    result = await api.ok("learner", "POST", f"{attempts}/{first['attempt_id']}/submit",
                          {"answers": wrong})
    assert result["score"] == 0 and not result["passed"] and result["attempts_left"] == 2
    assert not any(r["correct"] for r in result["results"])
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    assert outline["modules"][0]["lessons"][0]["state"] == "failed"
    # late: move the attempt's deadline into the past, beyond the grace
    second = await api.ok("learner", "POST", attempts)
    conn = await asyncpg.connect(api.server.database_url)
    try:
        await conn.execute("UPDATE quiz_attempts SET deadline = now() - interval '6 seconds'"
                           " WHERE id = $1", second["attempt_id"])
    finally:
        await conn.close()
    late = await api.ok("learner", "POST", f"{attempts}/{second['attempt_id']}/submit",
                        {"answers": right_answers(second)})
    assert late["late"] and late["score"] == 0 and not late["passed"]
    third = await api.ok("learner", "POST", attempts)
    assert third["attempts_left"] == 0
    passed = await api.ok("learner", "POST", f"{attempts}/{third['attempt_id']}/submit",
                          {"answers": right_answers(third)})
    assert passed["passed"] and passed["score"] == passed["max_score"]
    status, body = await api.call("learner", "POST", attempts)
    assert status == 409 and body["error"]["code"] == "limit_exceeded", body
    history = await api.ok("learner", "GET", attempts)
    assert [a["passed"] for a in history["attempts"]] == [False, False, True]
    assert [a["late"] for a in history["attempts"]] == [False, True, False]
    # staff see the answers; a pool draws among all four questions
    staff = await api.ok("owner", "GET", api.courses(f"/{course_id}/lessons/{quiz}"))
    assert len(staff["questions"]) == 4 and staff["questions"][0]["correct_choices"] == [1]
    seen = {q["id"] for a in (first, second, third) for q in a["questions"]}
    assert seen <= {q["id"] for q in staff["questions"]}


async def test_assignment_graded_by_staff(api: Api) -> None:
    await api.setup(members=("learner",))
    course_id = await api.course()
    module = await api.module(course_id)
    lesson = await api.lesson(course_id, module, kind="assignment", assignment={
        "instructions": "Write", "rubric": [{"criterion": "clarity", "points": 5},
                                            {"criterion": "depth", "points": 5}],
        "pass_points": 6})
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        sub = await api.ok("learner", "POST",
                           api.courses(f"/{course_id}/lessons/{lesson}/submissions"),
                           {"kind": "link", "content": "https://docs.example/essay"})
        sid = sub["submission"]["id"]
        assert sub["submission"]["max_score"] == 10 and sub["submission"]["score"] is None
        status, _ = await api.call("learner", "POST",
                                   api.courses(f"/{course_id}/submissions/{sid}/grade"),
                                   {"score": 10})
        assert status == 403
        status, body = await api.call("owner", "POST",
                                      api.courses(f"/{course_id}/submissions/{sid}/grade"),
                                      {"score": 11})
        assert status == 400 and body["error"]["code"] == "invalid_argument"
        graded = await api.ok("owner", "POST",
                              api.courses(f"/{course_id}/submissions/{sid}/grade"),
                              {"score": 8, "feedback": "Good depth."})
        assert graded["submission"]["passed"] is True
        event = await client.event("assignment_graded", submission_id=sid, timeout=10)
        assert event["feedback"] == "Good depth." and event["score"] == 8
        done = await client.event("course_completed", course_id=course_id, timeout=10)
        assert done["certificate_serial"] is None
    finally:
        await client.close()
    mine = await api.ok("learner", "GET",
                        api.courses(f"/{course_id}/lessons/{lesson}/submissions"))
    assert [s["feedback"] for s in mine["submissions"]] == ["Good depth."]


async def test_drip_unlock_reaches_a_connected_learner(api: Api) -> None:
    """A module dripping at a date: once the time comes, the drip task unlocks it and
    the connected learner gets ``lesson_unlocked`` over the gateway, exactly once
    although two more drip workers (as other processes would run) claim concurrently
    with the server's own."""
    from server.app import SERVICES
    from server.sidecar_host import CoreHost
    from sidecars.courses.drip import Drip
    from sidecars.courses.service import CourseService

    services = api.server.app[SERVICES]
    others = [Drip(host, CourseService(host)) for host in
              (CoreHost(services.sidecar_core), CoreHost(services.sidecar_core))]
    await api.setup(members=("learner",))
    course_id = await api.course()
    first = await api.module(course_id, position=1)
    await api.lesson(course_id, first)
    conn = await asyncpg.connect(api.server.database_url)
    try:
        soon = int(await conn.fetchval("SELECT extract(epoch FROM now()) * 1000")) + 1500
    finally:
        await conn.close()
    later = await api.module(course_id, position=2, drip="at_date", drip_at=soon)
    dripped = await api.lesson(course_id, later, title="Dripped")
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    assert outline["modules"][1]["open"] is False
    assert outline["modules"][1]["lessons"][0]["state"] == "locked"
    assert outline["modules"][1]["opens_at"] == soon
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    claimed = 0

    async def compete() -> None:
        nonlocal claimed
        while True:
            claimed += sum(await asyncio.gather(*(d.tick() for d in others)))
            await asyncio.sleep(0.02)

    racing = asyncio.create_task(compete())
    try:
        got = await client.event("lesson_unlocked", course_id=course_id, timeout=10)
        assert got["reason"] == "drip" and got["lesson_ids"] == [dripped]
        assert got["at"] >= soon
        await client.no_event("lesson_unlocked", wait=1.5)
        assert claimed <= 1
    finally:
        racing.cancel()
        await client.close()
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    assert outline["modules"][1]["lessons"][0]["state"] == "available"
    conn = await asyncpg.connect(api.server.database_url)
    try:
        pending = await conn.fetchval("SELECT count(*) FROM module_unlocks"
                                      " WHERE notified_at IS NULL")
    finally:
        await conn.close()
    assert pending == 0


async def test_staff_release_opens_everything_to_one_learner(api: Api) -> None:
    await api.setup(members=("learner", "other"))
    course_id = await api.course()
    module = await api.module(course_id, drip="after_days", drip_days=30)
    lesson = await api.lesson(course_id, module)
    for who in ("learner", "other"):
        await api.ok(who, "POST", api.courses(f"/{course_id}/enrolment"))
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        await api.ok("owner", "POST", api.courses(
            f"/{course_id}/enrolments/{api.uid('learner')}/release"))
        got = await client.event("lesson_unlocked", course_id=course_id, timeout=10)
        assert got["reason"] == "released" and got["lesson_ids"] == [lesson]
    finally:
        await client.close()
    for who, state in (("learner", "available"), ("other", "locked")):
        outline = await api.ok(who, "GET", api.courses(f"/{course_id}"))
        assert outline["modules"][0]["lessons"][0]["state"] == state, who


async def test_tier_loss_pauses_and_regain_resumes(api: Api) -> None:
    """Tier changes (from moderation now, billing later) reach the sidecar as outbox
    events: losing the course's tier pauses the enrolment live, regaining it resumes
    it; leaving the community (or a ban) pauses it too."""
    await api.setup(members=("learner",))
    course_id = await api.course(access={"kind": "tier", "value": 2},
                                 discussion_channel=True)
    module = await api.module(course_id)
    lesson = await api.lesson(course_id, module)
    status, body = await api.call("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    assert status == 403 and "tier 2" in body["error"]["message"], body
    tier = f"/communities/{api.cid}/members/{api.uid('learner')}/tier"
    await api.ok("owner", "PUT", tier, {"tier": 2})
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        course = (await api.ok("owner", "GET", api.courses(f"/{course_id}")))["course"]
        channel = course["discussion_channel_id"]
        assert channel is not None
        assert channel in {c["id"] for s in client.ready["communities"] for c in s["channels"]}
        await api.ok("owner", "PUT", tier, {"tier": 1})
        paused = await client.event("enrolment_updated", state="paused", timeout=15)
        assert paused["reason"] == "tier"
        await client.event("channel_delete", channel_id=channel, timeout=10)
        status, _ = await api.call("learner", "GET",
                                   api.courses(f"/{course_id}/lessons/{lesson}"))
        assert status == 403
        await api.ok("owner", "PUT", tier, {"tier": 3})
        resumed = await client.event("enrolment_updated", state="active", timeout=15)
        assert resumed["course_id"] == course_id
        await client.event("channel_create", timeout=10)
        await api.ok("learner", "GET", api.courses(f"/{course_id}/lessons/{lesson}"))
    finally:
        await client.close()
    # a ban (membership ends) pauses it
    owner = await GatewayClient.identified(api.http, api.server.ws_url, api.token("owner"))
    try:
        await owner.ok("ban_member", community_id=api.cid, user_id=api.uid("learner"),
                       reason="spam")
    finally:
        await owner.close()
    conn = await asyncpg.connect(api.server.database_url)
    try:
        for _ in range(200):
            row = await conn.fetchrow("SELECT state, reason FROM enrolments WHERE user_id = $1",
                                      api.uid("learner"))
            assert row is not None
            if row["state"] == "paused":
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert row is not None and (row["state"], row["reason"]) == ("paused", "left")


async def test_purchase_waits_for_a_grant(api: Api) -> None:
    """A purchase course: enrolling waits in pending_payment until the billing service
    (a ``courses:write`` key) or staff grant it."""
    await api.setup(members=("learner", "buyer"))
    course_id = await api.course(access={"kind": "purchase", "price_id": "price_123"})
    module = await api.module(course_id)
    await api.lesson(course_id, module)
    pending = await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    assert pending["enrolment"]["state"] == "pending_payment"
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    assert outline["modules"][0]["lessons"][0]["state"] == "locked"
    key = await api.ok("owner", "POST", f"/communities/{api.cid}/service-keys",
                       {"name": "billing", "scopes": ["courses:write"]})
    grant = api.courses(f"/{course_id}/enrolments/{api.uid('learner')}/grant")
    status, body = await api.call(None, "POST", grant, {"reason": "paid"},
                                  token=key["secret"])
    assert status == 200 and body["enrolment"]["state"] == "active", body
    assert body["enrolment"]["reason"] == "paid"
    status, _ = await api.call("learner", "POST",
                               api.courses(f"/{course_id}/enrolments/{api.uid('buyer')}/grant"),
                               {})
    assert status == 403
    got = await api.ok("owner", "POST",
                       api.courses(f"/{course_id}/enrolments/{api.uid('buyer')}/grant"), {})
    assert got["enrolment"]["state"] == "active"
    revoked = await api.ok("owner", "POST", api.courses(
        f"/{course_id}/enrolments/{api.uid('buyer')}/revoke"), {"reason": "refund"})
    assert revoked["enrolment"]["state"] == "revoked"
    status, body = await api.call("buyer", "POST", api.courses(f"/{course_id}/enrolment"))
    assert status == 403, body
    listed = await api.ok("owner", "GET", api.courses(f"/{course_id}/enrolments"))
    assert [e["state"] for e in listed["enrolments"]] == ["active", "revoked"]


async def test_live_session_prerequisite_refuses_until_completed(api: Api) -> None:
    """A live session whose ``prerequisite_course`` is a course id refuses
    registration with ``prerequisite_not_met`` (403) until the course is completed;
    free text stays an unchecked label."""
    await api.setup(members=("learner",))
    course_id = await api.course()
    module = await api.module(course_id)
    lesson = await api.lesson(course_id, module)
    session = await api.ok("owner", "POST", f"/communities/{api.cid}/live-sessions", {
        "title": "Office hours", "starts_at": 4_000_000_000_000,
        "prerequisite_course": str(course_id)})
    sid = session["session"]["id"]
    register = f"/communities/{api.cid}/live-sessions/{sid}/register"
    status, body = await api.call("learner", "POST", register)
    assert status == 403 and body["error"]["code"] == "prerequisite_not_met", body
    assert str(course_id) in body["error"]["message"]
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    status, body = await api.call("learner", "POST", register)
    assert status == 403 and body["error"]["code"] == "prerequisite_not_met", body
    await api.ok("learner", "POST", api.courses(f"/{course_id}/lessons/{lesson}/complete"))
    status, body = await api.call("learner", "POST", register)
    assert status == 200, body
    label = await api.ok("owner", "POST", f"/communities/{api.cid}/live-sessions", {
        "title": "Other", "starts_at": 4_000_000_000_000,
        "prerequisite_course": "Intro 101"})
    status, body = await api.call("learner", "POST", f"/communities/{api.cid}/live-sessions/"
                                  f"{label['session']['id']}/register")
    assert status == 200, body


async def test_course_prerequisites_and_drafts(api: Api) -> None:
    """Prerequisite courses gate enrolment; drafts are staff's only; course changes
    reach staff (``course_changed``), not learners."""
    await api.setup(members=("learner",), outsiders=("outsider",))
    owner = await GatewayClient.identified(api.http, api.server.ws_url, api.token("owner"))
    learner = await GatewayClient.identified(api.http, api.server.ws_url,
                                             api.token("learner"))
    try:
        basics = await api.course(title="Basics")
        created = await owner.event("course_changed", course_id=basics, timeout=10)
        assert created["change"] == "created" and created["by"] == api.uid("owner")
        published = await owner.event("course_changed", course_id=basics, timeout=10)
        assert published["change"] == "updated" and published["status"] == "published"
        await learner.no_event("course_changed", wait=0.5)
    finally:
        await owner.close()
        await learner.close()
    module = await api.module(basics)
    lesson = await api.lesson(basics, module)
    advanced = await api.course(title="Advanced", prerequisite_ids=[basics])
    draft = (await api.ok("owner", "POST", api.courses(), {"title": "Draft"}))["course"]["id"]
    status, body = await api.call("learner", "POST", api.courses(f"/{advanced}/enrolment"))
    assert status == 403 and body["error"]["code"] == "prerequisite_not_met", body
    await api.ok("learner", "POST", api.courses(f"/{basics}/enrolment"))
    await api.ok("learner", "POST", api.courses(f"/{basics}/lessons/{lesson}/complete"))
    await api.ok("learner", "POST", api.courses(f"/{advanced}/enrolment"))
    listed = await api.ok("learner", "GET", api.courses())
    assert [c["course"]["title"] for c in listed["courses"]] == ["Basics", "Advanced"]
    assert [c["enrolment_state"] for c in listed["courses"]] == ["completed", "active"]
    status, _ = await api.call("learner", "GET", api.courses(f"/{draft}"))
    assert status == 404
    staff = await api.ok("owner", "GET", api.courses())
    assert len(staff["courses"]) == 3
    status, body = await api.call("outsider", "GET", api.courses())
    assert status == 404, body
    status, body = await api.call("owner", "POST", api.courses(), {"title": "x" * 201})
    assert status == 400 and body["error"]["code"] == "invalid_request", body
    status, body = await api.call("owner", "PATCH", api.courses(f"/{basics}"),
                                  {"prerequisite_ids": [basics]})
    assert status == 400, body


async def test_live_session_lesson_completes_from_attendance(api: Api) -> None:
    """A live-session lesson completes once the attendance report shows the configured
    share of the session attended (here: 60 % needed; 50 % attended is refused, 80 %
    completes)."""
    await api.setup(members=("learner",))
    course_id = await api.course()
    module = await api.module(course_id)
    session = (await api.ok("owner", "POST", f"/communities/{api.cid}/live-sessions", {
        "title": "Live", "starts_at": 4_000_000_000_000}))["session"]
    lesson = await api.lesson(course_id, module, kind="live_session",
                              live_session_id=session["id"], live_min_percent=60)
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    one = f"/communities/{api.cid}/live-sessions/{session['id']}"
    await api.ok("owner", "POST", one + "/start")
    await api.ok("owner", "POST", one + "/end")
    conn = await asyncpg.connect(api.server.database_url)
    try:
        # a 100-second live window; the learner attended 50 s of it (two overlapping
        # stretches count once)
        await conn.execute("UPDATE live_sessions SET started_at = now() - interval '100 s',"
                           " ended_at = now() WHERE id = $1", session["id"])
        for start, end in ((100, 60), (80, 50)):
            await conn.execute(
                "INSERT INTO live_attendance (session_id, user_id, joined_at, left_at)"
                " VALUES ($1, $2, now() - $3 * interval '1 s', now() - $4 * interval '1 s')",
                session["id"], api.uid("learner"), start, end)
        complete = api.courses(f"/{course_id}/lessons/{lesson}/complete")
        status, body = await api.call("learner", "POST", complete)
        assert status == 409 and "attended 50%" in body["error"]["message"], body
        await conn.execute(
            "INSERT INTO live_attendance (session_id, user_id, joined_at, left_at)"
            " VALUES ($1, $2, now() - interval '40 s', now() - interval '10 s')",
            session["id"], api.uid("learner"))
    finally:
        await conn.close()
    done = await api.ok("learner", "POST", complete)
    assert done["state"] == "completed" and done["course_completed"]


async def test_enrolment_expires_after_its_access_period(api: Api) -> None:
    await api.setup(members=("learner",))
    course_id = await api.course(access_days=30)
    module = await api.module(course_id)
    await api.lesson(course_id, module)
    enrolment = (await api.ok("learner", "POST",
                              api.courses(f"/{course_id}/enrolment")))["enrolment"]
    assert enrolment["expires_at"] - enrolment["activated_at"] == 30 * 86_400_000
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        conn = await asyncpg.connect(api.server.database_url)
        try:
            await conn.execute("UPDATE enrolments SET expires_at = now() WHERE id = $1",
                               enrolment["id"])
        finally:
            await conn.close()
        got = await client.event("enrolment_updated", state="expired", timeout=10)
        assert got["course_id"] == course_id
    finally:
        await client.close()
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    assert outline["enrolment"]["state"] == "expired"
    assert outline["modules"][0]["lessons"][0]["state"] == "locked"
    again = await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    assert again["enrolment"]["state"] == "active"


async def test_lessons_in_order_unlock_one_after_another(api: Api) -> None:
    await api.setup(members=("learner",))
    course_id = await api.course(lessons_in_order=True)
    module = await api.module(course_id)
    first = await api.lesson(course_id, module, position=1)
    optional = await api.lesson(course_id, module, position=2, required=False)
    second = await api.lesson(course_id, module, position=3)
    await api.ok("learner", "POST", api.courses(f"/{course_id}/enrolment"))
    outline = await api.ok("learner", "GET", api.courses(f"/{course_id}"))
    states = [lesson["state"] for lesson in outline["modules"][0]["lessons"]]
    assert states == ["available", "locked", "locked"]
    status, _ = await api.call("learner", "POST",
                               api.courses(f"/{course_id}/lessons/{second}/complete"))
    assert status == 403
    client = await GatewayClient.identified(api.http, api.server.ws_url, api.token("learner"))
    try:
        await api.ok("learner", "POST", api.courses(f"/{course_id}/lessons/{first}/complete"))
        got = await client.event("lesson_unlocked", course_id=course_id, timeout=10)
        assert got["reason"] == "prerequisite" and got["lesson_ids"] == [optional, second]
    finally:
        await client.close()

