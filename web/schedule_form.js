// The "Schedule a session" form of the stage page (members with MANAGE_CHANNELS: the
// server creates the session's stage channel with it). Reads the form into the body of
// POST /communities/{id}/live-sessions (protocol/live.py: LiveSessionCreate). The start
// is typed in the viewer's local time (datetime-local) and sent as epoch milliseconds.

/** The request body, or throws an Error with a message for the form. */
export function scheduleBody(form) {
  const v = (name) => form.elements.namedItem(name).value.trim();
  const startsAt = new Date(v("starts")).getTime(); // datetime-local: parsed as local time
  if (!Number.isFinite(startsAt)) throw new Error("Pick a start date and time.");
  const minutes = Number(v("minutes"));
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    throw new Error("The length is 1 to 1440 minutes.");
  }
  const body = { title: v("title"), starts_at: startsAt, duration_s: minutes * 60 };
  if (!body.title) throw new Error("Give the session a title.");
  if (v("capacity")) body.capacity = Number(v("capacity"));
  if (v("course")) body.prerequisite_course = v("course");
  if (v("description")) body.description = v("description");
  return body;
}

/** A sensible default start: the next full hour, as a datetime-local value. */
export function nextHourLocal(now = new Date()) {
  const d = new Date(now);
  d.setMinutes(0, 0, 0);
  d.setHours(d.getHours() + 1);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
