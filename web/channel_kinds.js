// How the chat page's channel list shows voice and stage channels: a speaker or stage
// icon instead of "#", an accessible name that says what kind of room it is, and a link
// to the voice page for that community and room (/voice?community=C&channel=R), so the
// voice page opens on the right community instead of the first one it knows.
// Kept out of app.js so the chat page only asks "is this a voice room?" and "draw it".

import { el } from "./gateway.js";

export const VOICE_KINDS = new Set(["voice", "stage"]);

/** Static icon markup (no user data in it, so innerHTML is safe here). */
const ICONS = {
  voice: '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">'
    + '<path fill="currentColor" d="M3 9v6h4l5 5V4L7 9H3zm13.5 3a4.5 4.5 0 0 0-2.5-4.03v8.05A4.48 4.48 0 0 0 16.5 12zM14 3.23v2.06a7 7 0 0 1 0 13.42v2.06A9 9 0 0 0 14 3.23z"/></svg>',
  stage: '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">'
    + '<path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/></svg>',
};

/** Where the voice page shows this channel. */
export function voiceHref(channel) {
  const q = new URLSearchParams({ community: String(channel.community_id), channel: String(channel.id) });
  return `/voice?${q}`;
}

/** A decorative icon element for a voice or stage channel. */
export function voiceIcon(kind, className = "hash") {
  const span = el("span", { class: `${className} kind-icon`, ariaHidden: "true" });
  span.innerHTML = ICONS[kind] ?? ICONS.voice;
  return span;
}

/** The channel list entry of a voice or stage channel: a link, not a text-channel button.
 * Its accessible name is its visible text ("campfire voice") plus a hidden hint, so
 * speech-input users can say what they see. */
export function voiceChannelLink(channel) {
  return el("a", {
    class: "channel-link voice-channel-link", href: voiceHref(channel),
    dataTestid: "channel-link", dataChannelId: channel.id, dataChannelName: channel.name,
    dataChannelKind: channel.kind,
  },
  voiceIcon(channel.kind),
  el("span", { class: "name", text: channel.name }),
  el("span", { class: "kind-tag", text: channel.kind === "stage" ? " stage" : " voice" }),
  el("span", { class: "visually-hidden", text: " channel, opens the voice page" }));
}
