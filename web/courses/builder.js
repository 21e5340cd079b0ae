// Hearth course builder (/courses/build), for staff (the MANAGE_COURSES bit): create a
// course, its modules with drip, lessons (text, video URL, quiz with its questions and
// right answers, live session), publish it, and see each learner's progress (roster).
//
// Every change is one courses REST route (docs/courses.md); the server checks each, the
// page only offers and reports. The answers typed here go only to staff routes.

import { api, el, nameOf } from "../gateway.js";
import * as session from "../session.js";
import { banners } from "../errors.js";
import { mountShell } from "../shell.js";
import { PERMS } from "../pages.js";
import { ENROLMENT_WORDS } from "./words.js";

const $ = (id) => document.getElementById(id);
const feedback = banners();
const { showError, showNotice } = feedback;
const act = feedback.act.bind(feedback);
const STAFF = PERMS.MANAGE_COURSES | PERMS.ADMINISTRATOR;
const DRIP_WORDS = { immediate: "opens at once", after_days: "opens some days after enrolling",
  at_date: "opens on a date", after_previous: "opens after the previous module" };
const KIND_WORDS = { text: "text", video: "video", quiz: "quiz", live_session: "live session",
  audio: "audio", file: "file", assignment: "assignment" };

const state = { cid: null, courses: [], course: null, names: new Map() };
const base = () => `/communities/${state.cid}/courses`;


const numberOrNull = (id) => ($(id).value === "" ? null : Number($(id).value));

// ------------------------------------------------------------------------ courses

async function show(cid) {
  state.cid = cid;
  state.course = null;
  shell.setCommunity(cid);
  const url = new URL(location.href);
  url.searchParams.set("community", String(cid));
  history.replaceState(null, "", url);
  const here = shell.communities.find((c) => c.community.id === cid);
  const staff = ((here?.permissions ?? 0) & STAFF) !== 0;
  $("learner-link").href = `/courses?community=${cid}`;
  $("learner-link-2").href = `/courses?community=${cid}`;
  $("builder").hidden = !staff;
  $("no-access").hidden = staff;
  $("editor").hidden = true;
  if (!staff) return;
  $("builder-title").textContent = `Build ${here.community.name} courses`;
  await loadCourses();
}

async function loadCourses() {
  ({ courses: state.courses } = await api("GET", base()));
  $("build-list").replaceChildren(...state.courses.map(({ course }) => {
    const edit = el("button", { type: "button", class: "secondary", "data-testid": "course-edit",
      text: "Edit", "aria-label": `Edit ${course.title}` });
    edit.addEventListener("click", () => act(null, () => openCourse(course.id)));
    return el("li", { class: "row-item", "data-testid": "build-row", "data-course-title": course.title },
      el("span", { class: "grow" }, el("strong", { text: course.title })),
      el("span", { class: "pill", text: course.status }), edit);
  }));
}

$("course-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act($("course-form"), async () => {
    const kind = $("course-access").value;
    const access = { kind, value: Number($("course-access-value").value || 0) };
    if (kind === "purchase") access.price_id = $("course-price").value.trim() || null;
    const { course } = await api("POST", base(), {
      title: $("course-title").value.trim(), description: $("course-description").value,
      access, certificate: $("course-certificate").checked,
      lessons_in_order: $("course-in-order").checked });
    $("course-form").reset();
    await loadCourses();
    await openCourse(course.id);
  }, "Course created (a draft until you publish it).");
});

async function setStatus(status, words) {
  await act($("editor"), async () => {
    await api("PATCH", `${base()}/${state.course.course.id}`, { status });
    await loadCourses();
    await openCourse(state.course.course.id);
  }, words);
}
$("publish").addEventListener("click", () => setStatus("published", "Published: members see it now."));
$("unpublish").addEventListener("click", () => setStatus("draft", "Back to draft: members no longer see it."));
$("archive").addEventListener("click", () => {
  if (window.confirm("Archive this course? Nobody new can enrol.")) setStatus("archived", "Archived.");
});

// ------------------------------------------------------------------------ one course

async function openCourse(courseId) {
  state.course = await api("GET", `${base()}/${courseId}`);
  const { course, modules } = state.course;
  $("editor").hidden = false;
  $("editor").dataset.courseId = String(course.id);
  $("editor-h").textContent = course.title;
  $("editor-status").textContent = course.status;
  $("editor-status").dataset.status = course.status;
  $("publish").hidden = course.status === "published";
  $("unpublish").hidden = course.status === "draft";
  $("archive").hidden = course.status === "archived";
  $("build-outline").replaceChildren(...modules.map((m) => el("section", { class: "outline-module",
    "data-testid": "build-module", "data-module-title": m.title },
  el("h3", { text: `${m.title} — ${dripWords(m)}` }),
  el("ol", {}, ...m.lessons.map((l) => el("li", { "data-testid": "build-lesson", "data-lesson-title": l.title },
    `${l.title} `, el("span", { class: "pill", text: KIND_WORDS[l.kind] ?? l.kind }),
    l.required ? "" : el("span", { class: "pill", text: "optional" }),
    l.preview ? el("span", { class: "pill", text: "preview" }) : ""))))));
  $("lesson-module").replaceChildren(...modules.map((m) => el("option", { value: String(m.id), text: m.title })));
  const quizzes = modules.flatMap((m) => m.lessons.filter((l) => l.kind === "quiz"));
  $("question-lesson").replaceChildren(...quizzes.map((l) => el("option", { value: String(l.id), text: l.title })));
  await Promise.all([renderQuestions(), renderRoster()]);
}

const dripWords = (m) => DRIP_WORDS[m.drip] ?? m.drip;

$("module-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act($("module-form"), async () => {
    const drip = $("module-drip").value;
    const body = { title: $("module-title").value.trim(), drip,
      position: state.course.modules.length };
    if (drip === "after_days") body.drip_days = Number($("module-days").value || 0);
    if (drip === "at_date") {
      if (!$("module-date").value) throw new Error("Pick the date the module opens.");
      body.drip_at = new Date($("module-date").value).getTime();
    }
    await api("POST", `${base()}/${state.course.course.id}/modules`, body);
    $("module-form").reset();
    await openCourse(state.course.course.id);
  }, "Module added.");
});

$("lesson-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act($("lesson-form"), async () => {
    const moduleId = Number($("lesson-module").value);
    if (!moduleId) throw new Error("Add a module first.");
    const kind = $("lesson-kind").value;
    const module = state.course.modules.find((m) => m.id === moduleId);
    const body = { module_id: moduleId, title: $("lesson-title").value.trim(), kind,
      position: module ? module.lessons.length : 0, required: $("lesson-required").checked,
      preview: $("lesson-preview").checked, body: $("lesson-body").value };
    if (["video", "audio", "file"].includes(kind)) {
      body.media_url = $("lesson-url").value.trim() || null;
      body.duration_s = Number($("lesson-duration").value || 0);
    }
    if (kind === "live_session") body.live_session_id = numberOrNull("lesson-live");
    if (kind === "quiz") {
      body.quiz = { pass_percent: Number($("quiz-pass").value || 70),
        time_limit_s: numberOrNull("quiz-time"), max_attempts: numberOrNull("quiz-attempts") };
    }
    await api("POST", `${base()}/${state.course.course.id}/lessons`, body);
    $("lesson-form").reset();
    await openCourse(state.course.course.id);
    $("lesson-module").value = String(moduleId);
  }, "Lesson added.");
});

// ------------------------------------------------------------------------ questions

$("question-lesson").addEventListener("change", () => renderQuestions().catch(showError));

$("question-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act($("question-form"), async () => {
    const lessonId = Number($("question-lesson").value);
    if (!lessonId) throw new Error("Add a quiz lesson first.");
    const kind = $("question-kind").value;
    const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
    const body = { kind, prompt: $("question-prompt").value.trim(),
      points: Number($("question-points").value || 1) };
    if (kind === "short") {
      body.accepted_answers = lines("question-accepted");
      if (!body.accepted_answers.length) throw new Error("Give at least one accepted answer.");
    } else {
      if (kind !== "true_false") body.choices = lines("question-choices");
      body.correct_choices = $("question-correct").value.split(/[\s,]+/).filter(Boolean)
        .map((n) => Number(n) - 1);
      if (!body.correct_choices.length || body.correct_choices.some((n) => !(n >= 0))) {
        throw new Error("Say which choices are right, by their numbers (1 is the first).");
      }
    }
    const list = await currentQuestions(lessonId);
    body.position = list.length;
    await api("POST", `${base()}/${state.course.course.id}/lessons/${lessonId}/questions`, body);
    $("question-form").reset();
    $("question-lesson").value = String(lessonId);
    await renderQuestions();
  }, "Question added.");
});

async function currentQuestions(lessonId) {
  const reply = await api("GET", `${base()}/${state.course.course.id}/lessons/${lessonId}`);
  return reply.questions ?? [];
}

async function renderQuestions() {
  const lessonId = Number($("question-lesson").value);
  $("question-form").hidden = !lessonId;
  if (!lessonId) { $("question-list").replaceChildren(); return; }
  const questions = await currentQuestions(lessonId);
  $("question-list").replaceChildren(el("ol", {}, ...questions.map((q) => {
    const right = q.kind === "short" ? q.accepted_answers.join(" / ")
      : q.correct_choices.map((i) => q.choices[i]).join(", ");
    return el("li", { "data-testid": "question-row" }, `${q.prompt} — right: ${right} (${q.points} pt)`);
  })));
}

// ------------------------------------------------------------------------ roster

async function memberNames() {
  if (state.names.size) return;
  try {
    const { members } = await api("GET", `/communities/${state.cid}/members?limit=100`);
    for (const m of members) state.names.set(m.user.id, nameOf(m.user));
  } catch {
    // names are a nicety: the roster still shows ids
  }
}

async function renderRoster() {
  const courseId = state.course.course.id;
  const [{ enrolments }] = await Promise.all([
    api("GET", `${base()}/${courseId}/enrolments?limit=500`), memberNames()]);
  $("roster").replaceChildren(...(enrolments.length ? enrolments.map((e) => {
    const name = state.names.get(e.user_id) ?? `user ${e.user_id}`;
    const release = el("button", { type: "button", class: "secondary", "data-testid": "roster-release",
      text: "Open every module", "aria-label": `Open every module for ${name}`, disabled: e.released });
    release.addEventListener("click", () => act(null, async () => {
      await api("POST", `${base()}/${courseId}/enrolments/${e.user_id}/release`);
      await renderRoster();
    }, `Every module is open for ${name}.`));
    return el("li", { class: "row-item", "data-testid": "roster-row", "data-user-id": String(e.user_id) },
      el("span", { class: "grow", text: name }),
      el("span", { class: "pill", "data-testid": "roster-state", text: ENROLMENT_WORDS[e.state] ?? e.state }),
      el("progress", { max: 100, value: e.progress_percent, "aria-label": `${name}'s progress` }),
      el("span", { "data-testid": "roster-progress", text: `${e.progress_percent} %` }), release);
  }) : [el("li", { class: "muted", text: "Nobody has enrolled yet." })]));
}

// ------------------------------------------------------------------------ start

const shell = mountShell({ page: "courses", onCommunity: (id) => show(id).catch(showError) });
const user = await session.restore();
session.on("signedOut", () => { $("builder").hidden = true; $("signed-out").hidden = false; });
if (!user) {
  $("signed-out").hidden = false;
} else {
  await shell.refresh();
  const wanted = Number(new URLSearchParams(location.search).get("community"));
  const first = shell.communities.find((c) => c.community.id === wanted) ?? shell.communities[0];
  if (first) await show(first.community.id).catch(showError);
  else $("no-access").hidden = false;
  window.addEventListener("focus", () => { if (state.course) renderRoster().catch(showError); });
}
