// Whether the composer may post in a channel, and if not why and for how long. Built
// from what the server says: member_sanctioned (a timeout, or its lifting), a refused
// send (timed_out with retry_after_ms, channel_locked), channel_update (locked) and
// community_moderation_update (lockdown). The server checks every send again; this only
// saves the member typing a message that cannot go out, and tells them why.
//
// `ready` does not carry a running timeout, so after a reload the composer learns of one
// from the first refused send (its retry_after_ms says when it ends).

import { formatWait } from "./error-texts.js";

const timeouts = new Map(); // community id -> {until, reason, where}

export function noteTimeout(communityId, until, reason, where) {
  if (!communityId) return;
  if (until && until > Date.now()) timeouts.set(communityId, { until, reason: reason ?? null, where });
}

export function liftTimeout(communityId) { timeouts.delete(communityId); }

/** {blocked, text, kind} for the composer of `channel`. `canModerate`: the member may
 * post in locked channels. */
export function composerGate(channel, { communityName = "", canModerate = false } = {}) {
  if (!channel) return { blocked: true, text: "", kind: "none" };
  const t = channel.community_id ? timeouts.get(channel.community_id) : null;
  if (t) {
    const left = t.until - Date.now();
    if (left > 0) {
      const why = t.reason ? ` Reason: ${t.reason}.` : "";
      return { blocked: true, kind: "timeout", until: t.until,
        text: `You are timed out${communityName ? ` in ${communityName}` : ""}.${why} You can post again in ${formatWait(left)}.` };
    }
    timeouts.delete(channel.community_id);
  }
  if (channel.archived && channel.kind === "thread") {
    return { blocked: true, kind: "archived", text: "This thread is archived: it is read-only." };
  }
  if (channel.locked && !canModerate) {
    return { blocked: true, kind: "locked", text: "This channel is locked: only moderators can post here." };
  }
  return { blocked: false, text: "", kind: "open" };
}
