// What the stage page shows about live sessions, as DOM built from the wire types
// (protocol/live.py: LiveSession, AttendanceReport): the schedule, one session's details
// (start time in the viewer's locale and time zone, duration, capacity, prerequisites,
// state) and the attendance report for hosts. Rendering only: voice.js owns the state,
// the requests and the wiring (buttons carry data-action, handled there).

import { el } from "./gateway.js";

const STATE_LABELS = { scheduled: "Scheduled", live: "Live now", ended: "Ended", cancelled: "Cancelled" };
const STATE_ORDER = { live: 0, scheduled: 1, ended: 2, cancelled: 3 };
const MAX_PAST = 10; // ended/cancelled sessions listed in the schedule, newest first

/** The viewer's locale formatters (the browser's language and time zone). */
const whenFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "numeric", minute: "2-digit",
});
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export const stateLabel = (s) => STATE_LABELS[s] ?? s;

/** "in 45 minutes" / "2 hours ago", rounded to the largest sensible unit. */
export function relativeTo(ms, now = Date.now()) {
  const min = Math.round((ms - now) / 60000);
  if (Math.abs(min) < 60) return relative.format(min, "minute");
  const h = Math.round(min / 60);
  if (Math.abs(h) < 48) return relative.format(h, "hour");
  return relative.format(Math.round(h / 24), "day");
}

/** A <time> element: machine-readable ISO instant, text in the viewer's locale. */
export function timeNode(ms, testid) {
  const d = new Date(ms);
  return el("time", { dateTime: d.toISOString(), dataTestid: testid, text: whenFormat.format(d) });
}

function duration(s) {
  const min = Math.round(s / 60);
  return min < 60 ? `${min} min` : `${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ""}`;
}

export function capacityText(s) {
  const n = s.registered_count ?? 0;
  return s.capacity ? `${n} of ${s.capacity} seats taken` : `${n} registered, no limit`;
}

export function prerequisitesText(s) {
  const parts = [];
  if (s.required_tier) parts.push(`membership tier ${s.required_tier} or higher`);
  if (s.prerequisite_course) parts.push(`course: ${s.prerequisite_course}`);
  return parts.length ? parts.join("; ") : "None";
}

/** The schedule: live first, then upcoming by start time, then the latest past ones. */
export function sortSchedule(sessions) {
  const list = [...sessions].sort((a, b) => STATE_ORDER[a.state] - STATE_ORDER[b.state]
    || (a.state === "scheduled" || a.state === "live" ? a.starts_at - b.starts_at : b.starts_at - a.starts_at)
    || a.id - b.id);
  const past = list.filter((s) => s.state === "ended" || s.state === "cancelled").slice(0, MAX_PAST);
  return [...list.filter((s) => s.state === "live" || s.state === "scheduled"), ...past];
}

export function statePill(s, testid = "session-state") {
  return el("span", { class: "pill", dataState: s.state, dataTestid: testid, text: stateLabel(s.state) });
}

/** One entry of the schedule: a button that opens the session's stage. */
export function scheduleItem(s, selectedChannelId) {
  const when = s.state === "live" && s.started_at ? `started ${relativeTo(s.started_at)}`
    : s.state === "ended" && s.ended_at ? `ended ${relativeTo(s.ended_at)}`
      : s.state === "cancelled" ? "cancelled" : relativeTo(s.starts_at);
  return el("li", { class: "schedule-item", dataTestid: "schedule-item", dataSessionId: String(s.id),
    dataState: s.state },
  el("button", { type: "button", class: "schedule-link", dataAction: "open-session",
    dataChannelId: String(s.channel_id), ariaCurrent: s.channel_id === selectedChannelId ? "true" : null },
  el("span", { class: "schedule-title", text: s.title }),
  el("span", { class: "schedule-meta" }, statePill(s, "schedule-state"), " ",
    timeNode(s.starts_at, "schedule-time")),
  el("span", { class: "muted schedule-when", text: when })));
}

function row(term, ...desc) {
  return [el("dt", { text: term }), el("dd", {}, ...desc)];
}

/** The details list of one session. */
export function sessionDetails(s) {
  const rows = [
    ...row(s.state === "scheduled" ? "Starts" : "Scheduled for", timeNode(s.starts_at, "session-start"),
      s.state === "scheduled" ? el("span", { class: "muted", text: ` (${relativeTo(s.starts_at)})` }) : null),
    ...row("Length", el("span", { text: duration(s.duration_s ?? 3600) })),
    ...row("Seats", el("span", { dataTestid: "session-capacity", text: capacityText(s) })),
    ...row("Prerequisites", el("span", { dataTestid: "session-prerequisites", text: prerequisitesText(s) })),
  ];
  if (s.started_at) rows.push(...row("Went live", timeNode(s.started_at, "session-started")));
  if (s.ended_at) rows.push(...row("Ended", timeNode(s.ended_at, "session-ended")));
  if (s.recorded) rows.push(...row("Recording", el("span", { text: "This session is recorded." })));
  return rows;
}

const fmtTotal = (s) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`);

/** The attendance report as a table (hosts only; the server checks). */
export function attendanceView(report, userName) {
  const rows = [...report.attendees].sort((a, b) => b.total_s - a.total_s).map((a) => el("tr", {
    dataTestid: "attendee", dataUserId: String(a.user_id) },
  el("th", { scope: "row", text: userName(a.user_id) }),
  el("td", { dataTestid: "attendee-time", text: fmtTotal(a.total_s) }),
  el("td", { text: a.registered ? "Yes" : "No (walk-in)" })));
  const missed = report.missed ?? [];
  return [
    el("p", { dataTestid: "attendance-summary",
      text: `${report.attended.length} attended, ${(report.registered ?? []).length} registered, ${missed.length} missed.` }),
    rows.length ? el("div", { class: "table-scroll" }, el("table", { class: "attendance" },
      el("caption", { class: "visually-hidden", text: "Attendance" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Member" }),
        el("th", { scope: "col", text: "Time on stage" }), el("th", { scope: "col", text: "Registered" }))),
      el("tbody", {}, ...rows))) : el("p", { class: "muted", text: "Nobody has attended yet." }),
    missed.length ? el("p", { class: "muted", dataTestid: "attendance-missed",
      text: `Registered but missed: ${missed.map(userName).join(", ")}` }) : null,
  ].filter(Boolean);
}

/** One Q&A question, with its vote button and, for hosts and moderators, the answered /
 * dismiss controls. */
export function questionItem(q, { voted, mod, author }) {
  const meta = el("div", { class: "question-meta" },
    el("span", { class: "muted", text: author }),
    q.state !== "open" ? el("span", { class: `pill ${q.state}`, dataTestid: "question-state",
      text: q.state === "answered" ? "Answered" : "Dismissed" }) : null,
    el("button", { type: "button", class: "secondary vote", dataAction: "vote",
      dataQuestionId: String(q.id), dataTestid: "vote-button", ariaPressed: String(voted),
      disabled: q.state !== "open" },
    el("span", { ariaHidden: "true", text: "▲ " }), el("span", { class: "visually-hidden", text: "Upvote, " }),
    el("span", { dataTestid: "vote-count", text: String(q.votes) }),
    el("span", { class: "visually-hidden", text: q.votes === 1 ? " vote" : " votes" })));
  if (mod && q.state === "open") {
    meta.append(
      el("button", { type: "button", class: "link", dataAction: "answered",
        dataQuestionId: String(q.id), dataTestid: "mark-answered" }, "Mark answered",
      el("span", { class: "visually-hidden", text: `: ${q.text.slice(0, 80)}` })),
      el("button", { type: "button", class: "link", dataAction: "dismissed",
        dataQuestionId: String(q.id), dataTestid: "mark-dismissed" }, "Dismiss",
      el("span", { class: "visually-hidden", text: `: ${q.text.slice(0, 80)}` })));
  }
  return el("li", { class: "question", dataTestid: "question", dataQuestionId: String(q.id),
    dataState: q.state },
  el("p", { class: "question-text", dataTestid: "question-text", text: q.text }), meta);
}

const FOCUS_KEYS = ["data-action", "data-testid", "data-user-id", "data-question-id",
  "data-channel-id", "data-session-id"];

/** Replace a list's children without losing keyboard focus: lists re-render on every
 * live event (someone speaks, a hand goes up), and a keyboard user on one of their
 * buttons would otherwise be thrown back to the top of the page. The button that had
 * focus is found again by its data attributes and focused. */
export function replaceKeepingFocus(container, nodes) {
  const active = document.activeElement;
  const had = active && container.contains(active) && active !== container
    ? FOCUS_KEYS.filter((k) => active.hasAttribute(k)).map((k) => [k, active.getAttribute(k)]) : null;
  container.replaceChildren(...nodes);
  if (!had?.length) return;
  const selector = `${active.tagName.toLowerCase()}${had.map(([k, v]) => `[${k}="${CSS.escape(v)}"]`).join("")}`;
  const again = container.querySelector(selector);
  if (again) again.focus({ preventScroll: true });
  else {
    // Gone (a hand that was taken): land on the list's heading, not on <body>.
    const heading = container.closest("section, nav")?.querySelector("h2, h3");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
  }
}
