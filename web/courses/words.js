// Why a course, module or lesson is locked, in words a learner understands ("unlocks
// in 3 days", "needs tier 2", "finish Course 1 first"). Pure functions over the REST
// replies of docs/courses.md, so both course pages word states the same way.

export const ENROLMENT_WORDS = {
  active: "enrolled", completed: "completed", paused: "paused", expired: "expired",
  revoked: "revoked", pending_payment: "waiting for payment",
};

const PAUSED = { tier: "paused: your tier no longer opens it", left: "paused: you left the community" };

/** "in 3 days", "in 5 hours", "in 10 minutes", "any moment now". */
export function relative(ms, now = Date.now()) {
  const s = Math.round((ms - now) / 1000);
  if (s <= 60) return "any moment now";
  const [n, unit] = s >= 86_400 ? [Math.round(s / 86_400), "day"]
    : s >= 3600 ? [Math.round(s / 3600), "hour"] : [Math.round(s / 60), "minute"];
  return `in ${n} ${unit}${n === 1 ? "" : "s"}`;
}

/** Why the caller cannot enrol in (or open) a course of the catalogue, or null. */
export function lockReason(summary, all, snapshot) {
  const { course, enrolment_state: enrolled } = summary;
  if (enrolled === "active" || enrolled === "completed") return null;
  if (enrolled === "paused") return PAUSED.tier;
  if (enrolled === "revoked") return "staff ended your enrolment";
  if (enrolled === "pending_payment") return "waiting for your payment";
  const unmet = course.prerequisite_ids.filter((id) =>
    all.find((c) => c.course.id === id)?.enrolment_state !== "completed");
  if (unmet.length) {
    const names = unmet.map((id) => all.find((c) => c.course.id === id)?.course.title ?? `course ${id}`);
    return `finish ${names.join(" and ")} first`;
  }
  if (course.status !== "published") return course.status === "draft" ? "not published yet" : null;
  const rule = course.access;
  switch (rule.kind) {
    case "tier": return (snapshot?.tier ?? 0) >= rule.value ? null : `needs tier ${rule.value}`;
    case "level": return `needs level ${rule.value} (staff enrol you)`;
    case "manual": return "staff enrol you";
    case "days_after_join": return `opens ${rule.value} day${rule.value === 1 ? "" : "s"} after you joined`;
    case "purchase": return null; // enrolling is allowed: it waits for the payment
    default: return null;
  }
}

/** Why a module of the outline is still closed, or null when open. */
export function moduleLockText(module) {
  if (module.open) return null;
  if (module.opens_at) return `unlocks ${relative(module.opens_at)}`;
  if (module.drip === "after_previous") return "unlocks when you finish the previous module";
  return "opens once you are enrolled";
}

const LESSON_WORDS = { locked: "locked", available: "not started", in_progress: "in progress",
  completed: "done", passed: "passed", failed: "not passed yet" };

export function lessonStateText(lesson) {
  const words = LESSON_WORDS[lesson.state] ?? lesson.state;
  return lesson.watched_percent ? `${words}, ${lesson.watched_percent} % watched` : words;
}
