// The chat page's error sentences: the shared words of web/errors.js, plus what only the
// chat page shows with them (automod's reason, the time left of a wait).
// The code itself stays available to tests and bug reports as a data attribute.

import { friendlyError } from "../errors.js";


/** "4 min 12 s", "35 s", "2 h 5 min": a short, human wait. */
export function formatWait(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} days`;
}

/** The sentence to show for an error (a HearthError-like {code, detail, retryAfterMs},
 * or anything else). Unknown codes get the shared fallback sentence. */
export function errorText(err) {
  const code = err?.code;
  if (!code) return friendlyError(err);
  let text = friendlyError(err);
  if (code === "automod_blocked" && err.detail) text = `${text} (${err.detail})`;
  if (err.retryAfterMs > 0 && ["rate_limited", "slowmode", "timed_out", "banned"].includes(code)) {
    text = `${text} Try again in ${formatWait(err.retryAfterMs)}.`;
  }
  return text;
}
