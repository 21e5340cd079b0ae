// Hearth courses for learners (/courses): the community's catalogue with why a course
// is locked (in words), enrolling, the outline with progress, the lesson viewer (text in
// the chat page's markdown, video with the watched-share heartbeats the API expects),
// quizzes with a visible timer (graded by the server: the page never holds an answer
// before submitting), and the certificate with its public verification link.
//
// Every read and action is a courses REST route (docs/courses.md); the server decides,
// the page only offers and reports. Live updates: the gateway's course events for this
// learner (lesson_unlocked, enrolment_updated, quiz_graded, course_completed) make the
// page re-read the catalogue and the open course (one socket, as every page keeps), and
// so does the tab regaining focus (what a dropped connection missed).

import { api, connect, el, hooks } from "../gateway.js";
import * as session from "../session.js";
import { banners } from "../errors.js";
import { mountShell } from "../shell.js";
import { PERMS } from "../pages.js";
import { renderMarkdown } from "../chat/markdown.js";
import { lockReason, moduleLockText, lessonStateText, ENROLMENT_WORDS } from "./words.js";

const $ = (id) => document.getElementById(id);
const { showError, showNotice } = banners();
const HEARTBEAT_MS = 10_000;

const state = {
  cid: null,
  snapshot: null, // the caller's CommunitySnapshot (tier, permissions)
  courses: [], // CourseSummary[]
  course: null, // CourseReply of the open course
  lessonId: null,
  player: null, // the running video/audio heartbeat, stopped when leaving the lesson
  timer: null, // the quiz countdown interval
};

const base = () => `/communities/${state.cid}/courses`;

function report(err) {
  if (err?.code === "prerequisite_not_met") {
    showError(Object.assign(new Error(`Finish the earlier course first: ${err.message}`), { code: "" }));
  } else {
    showError(err);
  }
}

async function act(button, fn) {
  if (button) button.disabled = true;
  try { await fn(); } catch (err) { report(err); } finally { if (button) button.disabled = false; }
}

// ------------------------------------------------------------------------ catalogue

async function show(cid) {
  stopLesson();
  state.cid = cid;
  state.course = null;
  state.lessonId = null;
  $("course").hidden = true;
  shell.setCommunity(cid);
  const url = new URL(location.href);
  url.searchParams.set("community", String(cid));
  history.replaceState(null, "", url);
  await loadCatalogue();
  const wanted = Number(new URLSearchParams(location.search).get("course"));
  if (wanted && state.courses.some((c) => c.course.id === wanted)) await openCourse(wanted);
}

async function loadCatalogue() {
  const { communities } = await api("GET", "/communities");
  state.snapshot = communities.find((c) => c.community.id === state.cid) ?? null;
  const staff = ((state.snapshot?.permissions ?? 0) & (PERMS.MANAGE_COURSES | PERMS.ADMINISTRATOR)) !== 0;
  $("build-link").hidden = !staff;
  $("build-link").href = `/courses/build?community=${state.cid}`;
  $("courses-title").textContent = state.snapshot ? `${state.snapshot.community.name} courses` : "Courses";
  ({ courses: state.courses } = await api("GET", base()));
  renderCatalogue();
}

function renderCatalogue() {
  $("catalogue-empty").hidden = state.courses.length > 0;
  $("course-list").replaceChildren(...state.courses.map((summary) => {
    const { course } = summary;
    const reason = lockReason(summary, state.courses, state.snapshot);
    const enrolled = summary.enrolment_state != null;
    const facts = [];
    if (course.status !== "published") facts.push(el("span", { class: "pill", text: course.status }));
    if (enrolled) {
      facts.push(el("span", { class: "pill", "data-testid": "course-enrolment",
        text: ENROLMENT_WORDS[summary.enrolment_state] ?? summary.enrolment_state }));
      facts.push(el("span", { class: "pill", text: `${summary.progress_percent} %` }));
    }
    if (reason) {
      facts.push(el("span", { class: "pill lock", "data-testid": "lock-reason",
        text: `Locked: ${reason}` }));
    }
    const open = el("button", { type: "button", class: "secondary", "data-testid": "course-open",
      text: "Open", "aria-label": `Open ${course.title}` });
    open.addEventListener("click", () => act(open, () => openCourse(course.id)));
    const actions = [open];
    if (!enrolled && !reason) actions.unshift(enrolButton(course));
    return el("li", { class: "row-item", "data-testid": "course-row", "data-course-id": String(course.id),
      "data-course-title": course.title },
    el("span", { class: "grow" }, el("strong", { text: course.title }),
      course.description ? el("span", { class: "muted", text: ` — ${course.description}` }) : ""),
    ...facts, ...actions);
  }));
}

function enrolButton(course) {
  const button = el("button", { type: "button", "data-testid": "enrol", text: "Enrol",
    "aria-label": `Enrol in ${course.title}` });
  button.addEventListener("click", () => act(button, async () => {
    const { enrolment } = await api("POST", `${base()}/${course.id}/enrolment`);
    showNotice(enrolment.state === "pending_payment"
      ? "Enrolment waits for your payment." : `You are enrolled in ${course.title}.`);
    await loadCatalogue();
    await openCourse(course.id);
  }));
  return button;
}

// ------------------------------------------------------------------------ one course

async function openCourse(courseId) {
  if (state.course?.course.id !== courseId) { stopLesson(); state.lessonId = null; $("lesson").hidden = true; }
  state.course = await api("GET", `${base()}/${courseId}`);
  renderCourse();
  $("course").hidden = false;
}

async function reloadCourse() {
  if (!state.course) return;
  await loadCatalogue();
  await openCourse(state.course.course.id);
}

function renderCourse() {
  const { course, enrolment, modules, progress_percent: progress } = state.course;
  $("course-h").textContent = course.title;
  $("course").dataset.courseId = String(course.id);
  $("course-description").textContent = course.description;
  $("course-progress").value = progress;
  $("course-progress-text").textContent = `${progress} %`;
  $("course-state").textContent = enrolment ? (ENROLMENT_WORDS[enrolment.state] ?? enrolment.state) : "not enrolled";
  $("course-state").dataset.state = enrolment?.state ?? "none";
  const summary = state.courses.find((c) => c.course.id === course.id);
  const reason = summary ? lockReason(summary, state.courses, state.snapshot) : null;
  $("course-actions").replaceChildren(
    ...(!enrolment && !reason ? [enrolButton(course)] : []),
    ...(reason ? [el("p", { class: "lock", "data-testid": "course-lock-reason", text: `Locked: ${reason}` })] : []));
  $("outline").replaceChildren(...modules.map((module) => {
    const lock = moduleLockText(module);
    return el("section", { class: "outline-module", "data-testid": "outline-module" },
      el("h3", { text: module.title }),
      lock ? el("p", { class: "muted lock", "data-testid": "module-lock", text: `Locked: ${lock}` }) : "",
      el("ol", {}, ...module.lessons.map((lesson) => {
        const locked = lesson.state === "locked";
        const button = el("button", { type: "button", class: "link lesson-link",
          "data-testid": "lesson-link", "data-lesson-title": lesson.title, disabled: locked,
          "aria-current": lesson.id === state.lessonId ? "true" : null },
        lesson.title);
        button.addEventListener("click", () => act(null, () => openLesson(lesson.id)));
        return el("li", { "data-state": lesson.state },
          button, " ",
          el("span", { class: `pill state-${lesson.state}`, "data-testid": "lesson-state",
            text: lessonStateText(lesson) }));
      })));
  }));
  renderCertificate();
}

async function renderCertificate() {
  const box = $("certificate");
  const { course, enrolment } = state.course;
  if (!course.certificate || enrolment?.state !== "completed") { box.hidden = true; return; }
  try {
    const { certificate } = await api("GET", `${base()}/${course.id}/certificate`);
    const verify = new URL(certificate.verify_url, location.origin).href;
    box.replaceChildren(
      el("h3", { text: "Your certificate" }),
      el("p", {}, `Serial ${certificate.serial}, issued ${new Date(certificate.issued_at).toLocaleDateString()}. `,
        el("a", { href: `/api/v1/certificates/${certificate.serial}/pdf`, download: "",
          "data-testid": "certificate-pdf", text: "Download the PDF" })),
      el("p", {}, "Anyone can check it at ",
        el("a", { href: verify, "data-testid": "certificate-verify", text: verify })));
    box.hidden = false;
  } catch (err) {
    box.hidden = true;
    if (err?.code !== "not_found") report(err);
  }
}

// ------------------------------------------------------------------------ lessons

function stopLesson() {
  if (state.player) { state.player.stop(); state.player = null; }
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
}

async function openLesson(lessonId) {
  stopLesson();
  state.lessonId = lessonId;
  const courseId = state.course.course.id;
  const { lesson, state: lessonState } = await api("GET", `${base()}/${courseId}/lessons/${lessonId}`);
  $("lesson-h").textContent = lesson.title;
  $("lesson").dataset.kind = lesson.kind;
  $("lesson").hidden = false;
  const content = $("lesson-content");
  const actions = $("lesson-actions");
  content.replaceChildren();
  actions.replaceChildren();
  const done = ["completed", "passed"].includes(lessonState);
  if (lesson.kind === "text") {
    content.append(el("div", { class: "markdown", "data-testid": "lesson-body" }, renderMarkdown(lesson.body)));
  } else if (lesson.kind === "video" || lesson.kind === "audio") {
    if (lesson.body) content.append(el("div", { class: "markdown" }, renderMarkdown(lesson.body)));
    if (lesson.media_url) {
      const media = el(lesson.kind, { src: lesson.media_url, controls: true, preload: "metadata",
        "data-testid": "lesson-media", "aria-label": lesson.title });
      content.append(media);
      state.player = heartbeats(media, lesson);
    }
  } else if (lesson.kind === "file") {
    if (lesson.body) content.append(el("div", { class: "markdown" }, renderMarkdown(lesson.body)));
    if (lesson.media_url) content.append(el("p", {}, el("a", { href: lesson.media_url, text: "Open the file" })));
  } else if (lesson.kind === "live_session") {
    if (lesson.body) content.append(el("div", { class: "markdown" }, renderMarkdown(lesson.body)));
    content.append(el("p", {}, `A live session: attend at least ${lesson.live_min_percent} % of it on `,
      el("a", { href: `/voice?community=${state.cid}`, text: "the voice & stage page" }),
      " and it completes by itself."));
  } else if (lesson.kind === "quiz") {
    renderQuizIntro(lesson, lessonState);
    return;
  } else if (lesson.kind === "assignment") {
    renderAssignment(lesson);
  }
  const stateText = el("span", { class: "pill", "data-testid": "lesson-done-state",
    text: lessonStateText({ state: lessonState }) });
  if (!done && ["text", "video", "audio", "file", "live_session"].includes(lesson.kind)) {
    const complete = el("button", { type: "button", "data-testid": "lesson-complete", text: "Mark as done" });
    complete.addEventListener("click", () => act(complete, async () => {
      if (state.player) await state.player.flush();
      const reply = await api("POST", `${base()}/${courseId}/lessons/${lessonId}/complete`);
      showNotice(reply.course_completed ? "Course completed — well done!" : "Lesson done.");
      await reloadCourse();
      await openLesson(lessonId);
    }));
    actions.append(complete);
  }
  actions.append(stateText);
}

/** Watched-share heartbeats for a media lesson: every 10 s while playing and on pause,
 * `watched_s` = seconds of the media actually played (its played ranges), and the time
 * spent since the previous beat. */
function heartbeats(media, lesson) {
  let last = Date.now();
  let sent = -1;
  const watched = () => {
    let total = 0;
    for (let i = 0; i < media.played.length; i += 1) total += media.played.end(i) - media.played.start(i);
    return Math.floor(total);
  };
  const beat = async () => {
    const now = Date.now();
    const spent = Math.min(600, Math.round((now - last) / 1000));
    const w = watched();
    if (w === sent && spent === 0) return;
    last = now;
    sent = w;
    await api("POST", `${base()}/${lesson.course_id}/progress`, { items: [{ lesson_id: lesson.id,
      watched_s: w, position_s: Math.floor(media.currentTime || 0), time_spent_s: spent }] });
  };
  const safe = () => beat().catch(report);
  const interval = setInterval(() => { if (!media.paused) safe(); }, HEARTBEAT_MS);
  media.addEventListener("pause", safe);
  media.addEventListener("ended", safe);
  return { stop() { clearInterval(interval); safe(); }, flush: beat };
}

// ------------------------------------------------------------------------ quizzes

function renderQuizIntro(lesson, lessonState) {
  const quiz = lesson.quiz ?? { pass_percent: 70 };
  const facts = [`${lesson.question_count} question${lesson.question_count === 1 ? "" : "s"}`,
    `pass with ${quiz.pass_percent} %`];
  if (quiz.time_limit_s) facts.push(`${formatDuration(quiz.time_limit_s)} to answer`);
  if (quiz.max_attempts) facts.push(`${quiz.max_attempts} attempt${quiz.max_attempts === 1 ? "" : "s"}`);
  $("lesson-content").replaceChildren(
    lesson.body ? el("div", { class: "markdown" }, renderMarkdown(lesson.body)) : "",
    el("p", { "data-testid": "quiz-facts", text: `A quiz: ${facts.join(", ")}.` }),
    el("p", { class: "pill", "data-testid": "lesson-done-state", text: lessonStateText({ state: lessonState }) }));
  if (lessonState === "passed") return;
  const start = el("button", { type: "button", "data-testid": "quiz-start", text: "Start the quiz" });
  start.addEventListener("click", () => act(start, async () => {
    const attempt = await api("POST", `${base()}/${lesson.course_id}/lessons/${lesson.id}/attempts`);
    renderAttempt(lesson, attempt);
  }));
  $("lesson-actions").replaceChildren(start);
}

const formatDuration = (s) => (s >= 60 ? `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}` : `${s} s`);

function renderAttempt(lesson, attempt) {
  const form = el("form", { class: "quiz", "data-testid": "quiz-form", "data-attempt-id": String(attempt.attempt_id) });
  attempt.questions.forEach((q, n) => {
    const name = `q-${q.id}`;
    const set = el("fieldset", { class: "question", "data-testid": "question", "data-question-id": String(q.id) },
      el("legend", { text: `${n + 1}. ${q.prompt} (${q.points} point${q.points === 1 ? "" : "s"})` }));
    if (q.kind === "short") {
      const id = `${name}-text`;
      set.append(el("label", { htmlFor: id, class: "sr-only", text: "Your answer" }),
        el("input", { id, name, maxLength: "500", "data-testid": "answer-text" }));
    } else {
      const type = q.kind === "multiple" ? "checkbox" : "radio";
      q.choices.forEach((choice, i) => {
        const id = `${name}-${i}`;
        set.append(el("label", { class: "check", htmlFor: id },
          el("input", { type, id, name, value: String(i), "data-testid": "answer-choice" }), ` ${choice}`));
      });
    }
    form.append(set);
  });
  const submit = el("button", { type: "submit", "data-testid": "quiz-submit", text: "Submit answers" });
  form.append(submit);
  const timer = el("p", { class: "quiz-timer", role: "timer", "aria-live": "off", "data-testid": "quiz-timer" });
  if (attempt.deadline) {
    const tick = () => {
      const left = Math.max(0, Math.round((attempt.deadline - Date.now()) / 1000));
      timer.textContent = `Time left: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
      timer.classList.toggle("urgent", left <= 30);
      // Time is up: hand in what is there (the server grades it within its 5 s grace).
      if (left === 0 && !form.dataset.handedIn && form.isConnected) {
        form.dataset.handedIn = "time";
        form.requestSubmit(submit);
      }
    };
    tick();
    state.timer = setInterval(tick, 1000);
  } else {
    timer.textContent = "No time limit.";
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(submit, async () => {
      const answers = attempt.questions.map((q) => {
        if (q.kind === "short") return { question_id: q.id, text: form.elements[`q-${q.id}`].value };
        const picked = [...form.querySelectorAll(`input[name="q-${q.id}"]:checked`)].map((i) => Number(i.value));
        return { question_id: q.id, choices: picked };
      });
      const result = await api("POST",
        `${base()}/${lesson.course_id}/lessons/${lesson.id}/attempts/${attempt.attempt_id}/submit`, { answers });
      if (state.timer) { clearInterval(state.timer); state.timer = null; }
      renderResult(lesson, attempt, result);
      await reloadCourse();
    });
  });
  $("lesson-content").replaceChildren(timer, form);
  $("lesson-actions").replaceChildren();
}

function renderResult(lesson, attempt, result) {
  const byId = new Map(attempt.questions.map((q) => [q.id, q]));
  const verdict = result.late ? "Too late: the time was up, so this attempt scored 0."
    : result.passed ? "Passed!" : "Not passed this time.";
  const left = result.attempts_left == null ? "" : ` Attempts left: ${result.attempts_left}.`;
  $("lesson-content").replaceChildren(
    el("p", { class: `quiz-result ${result.passed ? "ok" : "bad"}`, role: "status", "data-testid": "quiz-result",
      "data-passed": String(result.passed), text: `${verdict} Score ${result.score} of ${result.max_score}.${left}` }),
    el("ol", { class: "quiz-review" }, ...result.results.map((r) => {
      const q = byId.get(r.question_id);
      const right = q?.kind === "short" ? r.accepted_answers.join(" / ")
        : r.correct_choices.map((i) => q?.choices[i]).join(", ");
      return el("li", { "data-testid": "question-result", "data-correct": String(r.correct) },
        `${q?.prompt ?? ""} — ${r.correct ? "right" : "wrong"}`, r.correct ? "" : ` (answer: ${right})`);
    })));
  if (!result.passed && result.attempts_left !== 0) {
    const again = el("button", { type: "button", class: "secondary", "data-testid": "quiz-again", text: "Try again" });
    again.addEventListener("click", () => act(again, () => openLesson(lesson.id)));
    $("lesson-actions").replaceChildren(again);
  }
}

// ------------------------------------------------------------------------ assignments

function renderAssignment(lesson) {
  const a = lesson.assignment ?? { instructions: "", rubric: [] };
  const form = el("form", { class: "stack", "data-testid": "assignment-form" },
    el("label", { htmlFor: "assignment-content", text: "Your work (text or a link)" }),
    el("textarea", { id: "assignment-content", rows: "5", required: true, maxLength: "20000" }),
    el("div", {}, el("button", { type: "submit", text: "Submit" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(form.querySelector("button"), async () => {
      const content = $("assignment-content").value.trim();
      const kind = /^https?:\/\//.test(content) ? "link" : "text";
      await api("POST", `${base()}/${lesson.course_id}/lessons/${lesson.id}/submissions`, { kind, content });
      showNotice("Submitted: staff will grade it.");
    });
  });
  $("lesson-content").append(
    el("div", { class: "markdown" }, renderMarkdown(a.instructions || "")),
    a.rubric.length ? el("ul", {}, ...a.rubric.map((r) => el("li", { text: `${r.criterion} (${r.points} points)` }))) : "",
    form);
}

// ------------------------------------------------------------------------ live

const COURSE_EVENTS = new Set(["lesson_unlocked", "enrolment_updated", "quiz_graded", "course_completed"]);
let rereading = null;

/** Read the catalogue and the open course again (a burst of events: once). A running
 * quiz is never disturbed; its own submit re-reads. */
function reread() {
  if (!state.cid || state.timer || rereading) return;
  rereading = (state.course ? reloadCourse() : loadCatalogue()).catch(report)
    .finally(() => { rereading = null; });
}

// ------------------------------------------------------------------------ start

const shell = mountShell({ page: "courses", onCommunity: (id) => show(id).catch(report) });
const user = await session.restore();
session.on("signedOut", () => { $("courses").hidden = true; $("signed-out").hidden = false; });
if (!user) {
  $("signed-out").hidden = false;
} else {
  $("courses").hidden = false;
  await shell.refresh();
  const wanted = Number(new URLSearchParams(location.search).get("community"));
  const first = shell.communities.find((c) => c.community.id === wanted) ?? shell.communities[0];
  if (first) await show(first.community.id).catch(report);
  window.addEventListener("focus", reread);
  hooks.event = (d) => { if (COURSE_EVENTS.has(d.t) && d.community_id === state.cid) reread(); };
  hooks.authLost = () => { $("courses").hidden = true; $("signed-out").hidden = false; };
  connect();
}
