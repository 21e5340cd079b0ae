// Friendly texts for the protocol's error codes (protocol/codes.py, docs/rest.md "Errors"),
// for the chat page. Kept as one plain table so it can be merged with the shell's shared
// mapping when that lands: same shape (code -> sentence), nothing else in it.
// The code itself stays available to tests and bug reports as a data attribute.

export const ERROR_TEXTS = Object.freeze({
  already_exists: "That already exists.",
  automod_blocked: "This message was blocked by the community's automatic moderation.",
  banned: "You are banned from this community.",
  channel_locked: "This channel is locked: only moderators can post here.",
  conflict: "Someone else changed this meanwhile. Reload and try again.",
  content_too_long: "Your message is too long.",
  disconnected: "You are offline. It will be sent when the connection is back.",
  empty_message: "A message cannot be empty.",
  forbidden: "You don't have permission to do that here.",
  internal: "Something went wrong on the server. Please try again.",
  invalid_argument: "That request was not valid.",
  invalid_emoji: "That emoji can't be used as a reaction.",
  limit_exceeded: "A limit of this community was reached.",
  lockdown: "The community is in lockdown: new members can't post for now.",
  not_found: "That no longer exists, or you can't see it.",
  rate_limited: "You're doing that too fast. Wait a moment and try again.",
  slowmode: "Slow mode is on in this channel.",
  thread_archived: "This thread is archived: it is read-only.",
  timed_out: "You are timed out in this community.",
  too_many_mentions: "Too many mentions in one message.",
  too_many_reactions: "This message has too many different reactions already.",
  too_many_attachments: "Too many attachments.",
  unavailable: "The server is busy for a moment. Try again shortly.",
  unauthorized: "Your session has ended. Please sign in again.",
});

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
 * or anything else). Unknown codes fall back to the server's own message. */
export function errorText(err) {
  const code = err?.code;
  if (!code) return String(err?.message ?? err);
  let text = ERROR_TEXTS[code] ?? (err.detail ? `${err.detail}` : `Error: ${code}`);
  if (code === "automod_blocked" && err.detail) text = `${text} (${err.detail})`;
  if (err.retryAfterMs > 0 && ["rate_limited", "slowmode", "timed_out", "banned"].includes(code)) {
    text = `${text} Try again in ${formatWait(err.retryAfterMs)}.`;
  }
  return text;
}
