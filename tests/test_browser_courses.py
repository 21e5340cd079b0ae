"""The courses pages (web/courses.html for learners, web/course-build.html for staff) in
headless Chromium against a real ``hearth serve`` with the courses sidecar.

A learner sees why locked courses are locked (in words), enrols, reads a text lesson,
passes a timed quiz graded by the server (the page holds no answer before submitting),
reaches 100 % / completed and gets a certificate whose public verification URL says
valid. Staff build such a course from the builder page alone. Both pages pass axe.
"""

from __future__ import annotations

import io
import json
import re
import wave
from typing import Any

import aiohttp

from tests import test_browser as tb
from tests.helpers import bearer, register

expect = tb.expect
browser = tb.browser
pytestmark = tb.pytestmark
LIVE_MS = tb.LIVE_MS
SCREENSHOT = "/tmp/hearth-courses-{}.png"
MEDIA_URL = "http://media.test/throwing.wav"
SECRET = "terracotta"  # the accepted answer of the short question: never in the DOM early


async def rest(http: aiohttp.ClientSession, method: str, url: str, token: str,
               body: Any = None) -> Any:
    async with http.request(method, url, headers=bearer(token), json=body) as reply:
        data = await reply.json() if reply.status != 204 else None
        assert reply.status < 300, (method, url, reply.status, data)
        return data


async def starter_community(http: aiohttp.ClientSession, base: str, token: str) -> int:
    data = await rest(http, "GET", f"{base}/communities", token)
    return int(data["communities"][0]["community"]["id"])


def silent_clip(seconds: int) -> bytes:
    """A WAV of silence: a <video> element plays it (audio only) in headless Chromium."""
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(1)
        clip.setframerate(8000)
        clip.writeframes(b"\x80" * 8000 * seconds)
    return out.getvalue()


async def open_courses(person: tb.Person, url: str, community_id: int, path: str = "/courses"
                       ) -> None:
    await person.page.goto(f"{url}{path}?community={community_id}")


def course_row(person: tb.Person, title: str) -> Any:
    return person.page.locator(f'[data-testid="course-row"][data-course-title="{title}"]')


async def take_course(learner: tb.Person, url: str, title: str, axe: Any) -> None:
    """Enrol, read the text lesson, pass the quiz with the timer shown, reach 100 %, and
    check the certificate's public verification URL."""
    row = course_row(learner, title)
    await expect(row).to_have_count(1, timeout=LIVE_MS)
    await row.get_by_test_id("enrol").click()
    await expect(learner.tid("course-heading")).to_have_text(title, timeout=LIVE_MS)
    await expect(learner.tid("course-state")).to_have_text("enrolled")
    await expect(learner.tid("course-progress")).to_have_text("0 %")

    await learner.page.locator('[data-testid="lesson-link"][data-lesson-title="Reading"]').click()
    await expect(learner.tid("lesson-body").locator("strong")).to_have_text("centre the clay",
                                                                           timeout=LIVE_MS)
    await learner.tid("lesson-complete").click()
    await expect(learner.tid("course-progress")).to_have_text("50 %", timeout=LIVE_MS)

    await learner.page.locator('[data-testid="lesson-link"][data-lesson-title="Check"]').click()
    await expect(learner.tid("quiz-facts")).to_contain_text("2 questions", timeout=LIVE_MS)
    await learner.tid("quiz-start").click()
    await expect(learner.tid("quiz-timer")).to_have_text(
        re.compile(r"Time left: [45]:\d\d"), timeout=LIVE_MS)
    await expect(learner.page.locator('[data-testid="question"]')).to_have_count(2)
    # The server sent prompts and choices only: no answer key anywhere in the page.
    html = await learner.page.content()
    assert SECRET not in html.lower()
    form_html = await learner.tid("quiz-form").inner_html()
    assert "correct" not in form_html.lower() and "accepted" not in form_html.lower()
    await axe(learner.page, "the learner page, quiz running")

    choice = learner.page.locator('[data-testid="question"]').filter(has_text="kiln").get_by_label(
        "Kiln")
    await choice.check()
    await learner.page.locator('[data-testid="question"]').filter(
        has_text="red clay").get_by_test_id("answer-text").fill("Terracotta.")
    await learner.tid("quiz-submit").click()
    await expect(learner.tid("quiz-result")).to_have_attribute("data-passed", "true",
                                                               timeout=LIVE_MS)
    await expect(learner.tid("quiz-result")).to_contain_text("Score 2 of 2")
    await expect(learner.tid("course-progress")).to_have_text("100 %", timeout=LIVE_MS)
    await expect(learner.tid("course-state")).to_have_text("completed")

    verify = learner.tid("certificate-verify")
    await expect(verify).to_be_visible(timeout=LIVE_MS)
    await expect(learner.tid("certificate-pdf")).to_have_attribute(
        "href", re.compile(r"^/api/v1/certificates/[A-Z0-9-]{19}/pdf$"))
    await learner.page.screenshot(path=SCREENSHOT.format("learner"), full_page=True)
    verify_url = await verify.get_attribute("href")
    assert verify_url and verify_url.startswith(url)
    async with aiohttp.ClientSession() as http, http.get(verify_url) as reply:
        body = await reply.json()  # no login
    assert reply.status == 200 and body["certificate"]["valid"] is True, body
    assert body["certificate"]["course_title"] == title


async def test_learner_sees_locks_and_completes_a_course(
        browser: Any, hearth_server: Any, axe: Any) -> None:
    errors: list[str] = []
    url = hearth_server.url
    base = f"{url}/api/v1"
    async with aiohttp.ClientSession() as http:
        staff = await register(http, url, "tutor")  # the first account owns the starter
        token = staff["access_token"]
        cid = await starter_community(http, base, token)
        courses = f"{base}/communities/{cid}/courses"
        basics = (await rest(http, "POST", courses, token, {
            "title": "Wheel basics", "description": "Throwing a pot",
            "certificate": True, "min_watch_percent": 80}))["course"]
        module = (await rest(http, "POST", f"{courses}/{basics['id']}/modules", token,
                             {"title": "First steps"}))["module"]
        await rest(http, "POST", f"{courses}/{basics['id']}/lessons", token, {
            "module_id": module["id"], "title": "Reading", "kind": "text", "position": 0,
            "body": "First **centre the clay**.\n\n<script>alert(1)</script>"})
        await rest(http, "POST", f"{courses}/{basics['id']}/lessons", token, {
            "module_id": module["id"], "title": "Watch", "kind": "video", "position": 2,
            "required": False, "media_url": MEDIA_URL, "duration_s": 2})
        later = (await rest(http, "POST", f"{courses}/{basics['id']}/modules", token, {
            "title": "Glaze week", "position": 1, "drip": "after_days", "drip_days": 3}))["module"]
        await rest(http, "POST", f"{courses}/{basics['id']}/lessons", token, {
            "module_id": later["id"], "title": "Glazes", "kind": "text", "required": False})
        quiz = (await rest(http, "POST", f"{courses}/{basics['id']}/lessons", token, {
            "module_id": module["id"], "title": "Check", "kind": "quiz", "position": 1,
            "quiz": {"pass_percent": 100, "time_limit_s": 300}}))["lesson"]
        await rest(http, "POST", f"{courses}/{basics['id']}/lessons/{quiz['id']}/questions",
                   token, {"kind": "single", "prompt": "Where is a pot fired?",
                           "choices": ["Kiln", "Fridge"], "correct_choices": [0]})
        await rest(http, "POST", f"{courses}/{basics['id']}/lessons/{quiz['id']}/questions",
                   token, {"kind": "short", "prompt": "What is red clay called once fired?",
                           "accepted_answers": [SECRET], "position": 1})
        await rest(http, "PATCH", f"{courses}/{basics['id']}", token, {"status": "published"})
        for body in ({"title": "Masterclass", "access": {"kind": "tier", "value": 3}},
                     {"title": "Glazing", "prerequisite_ids": [basics["id"]]}):
            made = (await rest(http, "POST", courses, token, body))["course"]
            await rest(http, "PATCH", f"{courses}/{made['id']}", token, {"status": "published"})

    learner = await tb.Person.open(browser, url, "learner", errors)
    clip = silent_clip(2)
    await learner.page.route(MEDIA_URL, lambda route: route.fulfill(
        status=200, body=clip, headers={"Content-Type": "audio/wav"}))
    await learner.register("lena", "Lena")
    async with aiohttp.ClientSession() as http:
        members = await rest(http, "GET", f"{base}/communities/{cid}/members?limit=10", token)
    learner_id = next(m["user"]["id"] for m in members["members"]
                      if m["user"]["username"] == "lena")
    await open_courses(learner, url, cid)
    await expect(learner.tid("nav-courses")).to_have_attribute("aria-current", "page",
                                                               timeout=LIVE_MS)
    await expect(learner.page.locator('[data-testid="course-row"]')).to_have_count(
        3, timeout=LIVE_MS)
    await expect(learner.tid("build-link")).to_be_hidden()
    # Locked courses say why, in words, and offer no enrol button.
    await expect(course_row(learner, "Masterclass").get_by_test_id("lock-reason")).to_have_text(
        "Locked: needs tier 3")
    await expect(course_row(learner, "Glazing").get_by_test_id("lock-reason")).to_have_text(
        "Locked: finish Wheel basics first")
    await expect(course_row(learner, "Glazing").get_by_test_id("enrol")).to_have_count(0)
    await axe(learner.page, "the learner page's catalogue")

    # Live: staff grant the tier course; the learner's catalogue shows it with no reload.
    masterclass = await learner.page.locator(
        '[data-testid="course-row"][data-course-title="Masterclass"]').get_attribute(
        "data-course-id")
    async with aiohttp.ClientSession() as http:
        await rest(http, "POST", f"{courses}/{masterclass}/enrolments/{learner_id}/grant",
                   token, {"reason": "scholarship"})
    await expect(course_row(learner, "Masterclass").get_by_test_id("course-enrolment")
                 ).to_have_text("enrolled", timeout=LIVE_MS)
    await expect(course_row(learner, "Masterclass").get_by_test_id("lock-reason")
                 ).to_have_count(0)

    await take_course(learner, url, "Wheel basics", axe)
    # A module on a drip says when it opens, in words.
    await expect(learner.tid("module-lock")).to_have_text("Locked: unlocks in 3 days")
    # A video lesson: the page beats the watched share; once watched, it completes.
    await learner.page.locator('[data-testid="lesson-link"][data-lesson-title="Watch"]').click()
    media = learner.tid("lesson-media")
    await expect(media).to_have_attribute("src", MEDIA_URL, timeout=LIVE_MS)
    await media.evaluate("(m) => { m.muted = true; return m.play(); }")
    await learner.page.wait_for_function(
        "document.querySelector('[data-testid=lesson-media]').ended", timeout=10_000)
    await learner.tid("lesson-complete").click()
    watched = learner.page.locator('[data-testid="lesson-link"][data-lesson-title="Watch"]'
                                   ).locator("xpath=..").get_by_test_id("lesson-state")
    await expect(watched).to_have_text(re.compile(r"^done, (9\d|100) % watched$"),
                                       timeout=LIVE_MS)
    # The text lesson's raw HTML stayed text (sanitised markdown).
    assert await learner.page.evaluate("typeof window.__pwned") == "undefined"
    # The prerequisite is met now: Glazing opens for enrolling.
    await expect(course_row(learner, "Glazing").get_by_test_id("enrol")).to_have_count(1)
    await expect(course_row(learner, "Glazing").get_by_test_id("lock-reason")).to_have_count(0)
    assert not errors, json.dumps(errors, indent=1)


async def test_staff_build_a_course_a_learner_completes_it(
        browser: Any, hearth_server: Any, axe: Any) -> None:
    errors: list[str] = []
    url = hearth_server.url
    staff = await tb.Person.open(browser, url, "staff", errors)
    await staff.register("tutor", "Tutor")  # the first account owns the starter community
    learner = await tb.Person.open(browser, url, "learner", errors)
    await learner.register("lena", "Lena")

    await staff.page.goto(f"{url}/courses")
    await expect(staff.tid("build-link")).to_be_visible(timeout=LIVE_MS)
    await staff.tid("build-link").click()
    await expect(staff.tid("builder-title")).to_have_text("Build Hearth courses", timeout=LIVE_MS)
    await axe(staff.page, "the builder page, empty")

    await staff.tid("course-title").fill("Raku firing")
    await staff.tid("course-description").fill("Fast firing, crackle glazes")
    await staff.tid("course-create").click()
    await expect(staff.tid("editor-heading")).to_have_text("Raku firing", timeout=LIVE_MS)
    await expect(staff.tid("editor-status")).to_have_text("draft")

    await staff.tid("module-title").fill("First steps")
    await staff.tid("module-create").click()
    await expect(staff.page.locator('[data-testid="build-module"]')).to_have_count(
        1, timeout=LIVE_MS)
    await staff.tid("lesson-title").fill("Reading")
    await staff.tid("lesson-kind").select_option("text")
    await staff.tid("lesson-body").fill("First **centre the clay**.")
    await staff.tid("lesson-create").click()
    await expect(staff.page.locator('[data-testid="build-lesson"]')).to_have_count(
        1, timeout=LIVE_MS)
    await staff.tid("lesson-title").fill("Check")
    await staff.tid("lesson-kind").select_option("quiz")
    await staff.tid("quiz-pass").fill("100")
    await staff.tid("quiz-time").fill("300")
    await staff.tid("lesson-create").click()
    await expect(staff.page.locator('[data-testid="build-lesson"]')).to_have_count(
        2, timeout=LIVE_MS)

    await expect(staff.tid("question-lesson")).to_have_value(re.compile(r"\d+"))
    await staff.tid("question-kind").select_option("single")
    await staff.tid("question-prompt").fill("Where is a pot fired?")
    await staff.tid("question-choices").fill("Kiln\nFridge")
    await staff.tid("question-correct").fill("1")
    await staff.tid("question-create").click()
    questions = staff.page.locator('[data-testid="question-row"]')
    await expect(questions).to_have_count(1, timeout=LIVE_MS)
    await expect(questions.nth(0)).to_contain_text("right: Kiln")
    await staff.tid("question-kind").select_option("short")
    await staff.tid("question-prompt").fill("What is red clay called once fired?")
    await staff.tid("question-accepted").fill(SECRET)
    await staff.tid("question-create").click()
    await expect(questions).to_have_count(2, timeout=LIVE_MS)
    await staff.tid("publish").click()
    await expect(staff.tid("editor-status")).to_have_text("published", timeout=LIVE_MS)
    await axe(staff.page, "the builder page, a course open")

    await learner.page.goto(f"{url}/courses")
    await take_course(learner, url, "Raku firing", axe)

    # The roster shows the learner's progress.
    await staff.page.locator('[data-testid="build-row"][data-course-title="Raku firing"]'
                             ).get_by_test_id("course-edit").click()
    row = staff.page.locator('[data-testid="roster-row"]').filter(has_text="Lena")
    await expect(row).to_have_count(1, timeout=LIVE_MS)
    await expect(row.get_by_test_id("roster-state")).to_have_text("completed")
    await expect(row.get_by_test_id("roster-progress")).to_have_text("100 %")
    await staff.page.screenshot(path=SCREENSHOT.format("builder"), full_page=True)
    await axe(staff.page, "the builder page with its roster")
    assert not errors, json.dumps(errors, indent=1)


async def test_a_quiz_hands_itself_in_when_time_is_up(browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    url = hearth_server.url
    base = f"{url}/api/v1"
    async with aiohttp.ClientSession() as http:
        staff = await register(http, url, "tutor")
        token = staff["access_token"]
        cid = await starter_community(http, base, token)
        courses = f"{base}/communities/{cid}/courses"
        course = (await rest(http, "POST", courses, token, {"title": "Speed round"}))["course"]
        module = (await rest(http, "POST", f"{courses}/{course['id']}/modules", token,
                             {"title": "Only"}))["module"]
        quiz = (await rest(http, "POST", f"{courses}/{course['id']}/lessons", token, {
            "module_id": module["id"], "title": "Quick", "kind": "quiz",
            "quiz": {"time_limit_s": 10, "max_attempts": 2}}))["lesson"]
        await rest(http, "POST", f"{courses}/{course['id']}/lessons/{quiz['id']}/questions",
                   token, {"kind": "true_false", "prompt": "Clay shrinks in the kiln.",
                           "correct_choices": [0]})
        await rest(http, "PATCH", f"{courses}/{course['id']}", token, {"status": "published"})

    learner = await tb.Person.open(browser, url, "learner", errors)
    await learner.register("lena", "Lena")
    await open_courses(learner, url, cid)
    await course_row(learner, "Speed round").get_by_test_id("enrol").click()
    await learner.page.locator('[data-testid="lesson-link"][data-lesson-title="Quick"]').click()
    await learner.tid("quiz-start").click()
    await expect(learner.tid("quiz-timer")).to_have_text(re.compile(r"Time left: 0:(10|0\d)"),
                                                         timeout=LIVE_MS)
    # Nobody answers: at 0:00 the page hands the attempt in; the server grades it.
    await expect(learner.tid("quiz-result")).to_have_attribute("data-passed", "false",
                                                               timeout=20_000)
    await expect(learner.tid("quiz-result")).to_contain_text("Attempts left: 1")
    await expect(learner.tid("quiz-again")).to_be_visible()
    assert not errors, json.dumps(errors, indent=1)
