// Hearth web client: plain ES module, no build step, no framework.
// REST for accounts and communities (docs/CONTRACTS.md), the /gateway websocket for
// everything live (protocol/frames.py). Tokens live in sessionStorage, so two tabs can
// be two different people. The connection layer (tokens, REST, gateway) is gateway.js,
// shared with the moderator console (mod.js).

import {
  HearthError, api, connect, dropSocket, el, gw, hooks, nameOf, orphanErrors, request,
  resumeStoredSession, saveTokens, signOut, store,
} from "./gateway.js";
import { Autocomplete } from "./chat/autocomplete.js";
import { errorText, formatWait } from "./chat/error-texts.js";
import { closePicker, openPicker } from "./chat/emoji.js";
import { composerGate, liftTimeout, noteTimeout } from "./chat/gate.js";
import { WindowedList } from "./chat/list.js";
import { plainText, renderMarkdown } from "./chat/markdown.js";
import {
  dmName, loadMembers, membersMatching, onMemberJoin, onMemberLeave, onPresence, people,
  rememberUser, renderMemberList, showProfile, userById, watchPresence,
} from "./chat/members.js";
import { ThreadPanel, threadNameFor } from "./chat/threads.js";

const PAGE = 50;
const TYPING_EVERY_MS = 3000;
const QUICK_EMOJI = "👍";
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------ state

const state = {
  me: null,
  communities: new Map(), // community id -> {community, role, member_count}
  channels: new Map(), // channel id -> Channel
  readStates: new Map(), // channel id -> ReadState
  current: null, // selected channel id
  messages: [], // the current channel's messages, oldest first
  hasMore: false,
  loaded: false,
  loadingOlder: false,
  pending: new Map(), // nonce -> {nonce, channel_id, content, error}
  typing: new Map(), // "channel:user" -> {channel_id, user, until}
  myReactions: new Set(), // "message:emoji" I have added
  limits: { typing_ttl_ms: 10000 },
  lastTypingSent: 0,
  dividerSeq: null, // messages after this seq were unread when the channel was opened
  replyTo: null, // the message the composer replies to
  groupMode: false, // picking people for a group DM in the member list
  groupPick: new Set(),
};

// ------------------------------------------------------------------------ errors / UI

let errorTimer = null;
function showError(err) {
  const text = err instanceof HearthError ? errorText(err) : String(err?.message ?? err);
  $("error-text").textContent = text;
  if (err?.code) $("error-text").dataset.errorCode = err.code;
  else delete $("error-text").dataset.errorCode;
  $("error-banner").hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { $("error-banner").hidden = true; }, 10000);
}

let noticeTimer = null;
function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { $("notice").hidden = true; }, 6000);
}

function setStatus(text, kind = "") {
  const el = $("connection-status");
  el.textContent = text;
  el.dataset.state = kind;
}

// Icon paths from Material Design Icons (Apache-2.0); SVG, so no emoji font is needed.
const ICONS = {
  thumb: "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10a2 2 0 0 0 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
  edit: "M3 17.25V21h3.75L17.81 9.94l-3.75-3.75L3 17.25zM20.71 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z",
  trash: "M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z",
  flag: "M14.4 6 14 4H5v17h2v-7h5.6l.4 2h7V6z",
  smile: "M11.99 2C6.47 2 2 6.48 2 12s4.47 10 9.99 10C17.52 22 22 17.52 22 12S17.52 2 11.99 2zM12 20c-4.42 0-8-3.58-8-8s3.58-8 8-8 8 3.58 8 8-3.58 8-8 8zm3.5-9c.83 0 1.5-.67 1.5-1.5S16.33 8 15.5 8 14 8.67 14 9.5s.67 1.5 1.5 1.5zm-7 0c.83 0 1.5-.67 1.5-1.5S9.33 8 8.5 8 7 8.67 7 9.5 7.67 11 8.5 11zm3.5 6.5c2.33 0 4.31-1.46 5.11-3.5H6.89c.8 2.04 2.78 3.5 5.11 3.5z",
  reply: "M10 9V5l-7 7 7 7v-4.1c5 0 8.5 1.6 11 5.1-1-5-4-10-11-11z",
  thread: "M21 6h-2v9H6v2c0 .55.45 1 1 1h11l4 4V7c0-.55-.45-1-1-1zm-4 6V3c0-.55-.45-1-1-1H3c-.55 0-1 .45-1 1v14l4-4h10c.55 0 1-.45 1-1z",
};
function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

const hue = (id) => (Number(id) * 67) % 360;

// ----------------------------------------------------------------------------- events

function addSnapshot(snap) {
  state.communities.set(snap.community.id, { community: snap.community, role: snap.role,
    member_count: snap.member_count, permissions: snap.permissions ?? 0 });
  for (const ch of snap.channels) state.channels.set(ch.id, ch);
}

// Bits of rooms/realtime/permissions.py Permission that open the moderator console.
const MOD_BITS = (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 16) | (1 << 17) | (1 << 30);
const STAFF_ROLES = new Set(["moderator", "admin", "owner"]);

/** My role or bits changed: re-read my communities' snapshots (they carry the
 * re-resolved bits) for the console link and the moderator buttons on messages. */
async function refreshPermissions() {
  try {
    const { communities } = await api("GET", "/communities");
    for (const snap of communities) {
      const c = state.communities.get(snap.community.id);
      if (c) { c.role = snap.role; c.permissions = snap.permissions ?? 0; }
    }
    renderHeader();
    renderModLink();
    state.messages = state.messages.map((m) => ({ ...m })); // rebuild: buttons may change
    renderMessages();
  } catch (err) { showError(err); }
}

/** The console link is for members who can moderate somewhere (the server checks
 * every action again; this only decides whether to offer the page). It opens the
 * community of the current channel when that one is moderated. */
function renderModLink() {
  const mods = (c) => (c.permissions ? (c.permissions & MOD_BITS) !== 0 : STAFF_ROLES.has(c.role));
  const can = [...state.communities.values()].some(mods);
  const link = $("mod-link");
  link.hidden = !can;
  const cid = state.channels.get(state.current)?.community_id;
  const here = cid ? state.communities.get(cid) : null;
  link.href = here && mods(here) ? `/mod?community=${cid}` : "/mod";
}

function onReady(f) {
  state.me = f.user;
  state.communities.clear();
  state.channels.clear();
  state.readStates.clear();
  f.communities.forEach(addSnapshot);
  for (const ch of f.private_channels) state.channels.set(ch.id, ch);
  for (const rs of f.read_states) state.readStates.set(rs.channel_id, rs);
  rememberUser(f.user);
  people.communities.clear();
  people.loading.clear();
  people.subscribed = null;
  showChat();
  // Names for mentions, DMs and the member lists: every community's members (paged).
  for (const cid of state.communities.keys()) {
    loadMembers(cid).then(() => { renderSidebar(); renderMembers(); rerenderMessages(); }).catch(showError);
  }
  const saved = Number(store.get("channel"));
  const pick = [state.current, saved].find((id) => id && state.channels.has(id))
    ?? [...state.channels.values()].find((c) => c.name === "general")?.id
    ?? sortedChannels()[0]?.id;
  renderSidebar();
  renderModLink();
  if (pick) selectChannel(pick);
}

function onEvent(d) {
  switch (d.t) {
    case "message_create": onMessageCreate(d.message); break;
    case "message_update":
      if (d.message.channel_id === state.current) upsert(d.message);
      threads.onMessage(d.message);
      break;
    case "message_delete":
      if (d.channel_id === threads.openId) threads.onDelete([d.message_id]);
      if (d.channel_id === state.current) {
        state.messages = state.messages.filter((m) => m.id !== d.message_id);
        renderMessages();
      }
      break;
    case "message_delete_bulk":
      if (d.channel_id === threads.openId) threads.onDelete(d.message_ids);
      if (d.channel_id === state.current) {
        const gone = new Set(d.message_ids);
        state.messages = state.messages.filter((m) => !gone.has(m.id));
        renderMessages();
      }
      break;
    case "reaction_add":
    case "reaction_remove": onReaction(d); break;
    case "typing_start": onTyping(d); break;
    case "read_state_update":
      state.readStates.set(d.read_state.channel_id, d.read_state);
      renderSidebar();
      break;
    case "channel_create":
    case "channel_update":
      state.channels.set(d.channel.id, d.channel);
      renderSidebar();
      if (d.channel.id === state.current) { renderHeader(); renderGate(); }
      if (d.channel.id === threads.openId) threads.refreshHeader();
      if (d.channel.kind === "thread" && d.channel.parent_id === state.current) rerenderMessages();
      break;
    case "channel_delete":
      state.channels.delete(d.channel_id);
      if (d.channel_id === state.current) selectChannel(sortedChannels()[0]?.id ?? null);
      renderSidebar();
      break;
    case "community_available": addSnapshot(d.snapshot); renderSidebar(); renderModLink(); break;
    case "member_update":
      rememberUser(d.member.user);
      if (d.member.user.id === state.me?.id) refreshPermissions();
      break;
    case "member_join": onMemberJoin(d); renderMembers(); break;
    case "member_leave": onMemberLeave(d.community_id, d.user_id ?? d.user?.id); renderMembers(); break;
    case "presence_update": {
      const seen = onPresence(d);
      if (seen === "stale") reloadMembersSoon(d.community_id);
      if (seen) renderMembers();
      break;
    }
    case "community_moderation_update": {
      const c = state.communities.get(d.community_id);
      if (c) c.lockdown = d.lockdown;
      break;
    }
    case "permissions_update":
      if (d.user_id == null || d.user_id === state.me?.id) refreshPermissions();
      break;
    case "community_unavailable":
      state.communities.delete(d.community_id);
      for (const ch of [...state.channels.values()]) {
        if (ch.community_id === d.community_id) state.channels.delete(ch.id);
      }
      if (!state.channels.has(state.current)) selectChannel(sortedChannels()[0]?.id ?? null);
      renderSidebar();
      renderModLink();
      if (d.sanction) showError(`You were ${d.sanction.kind === "ban" ? "banned" : "removed"}`
        + ` from a community${d.sanction.reason ? `: ${d.sanction.reason}` : ""}.`);
      break;
    case "member_sanctioned": {
      const where = state.communities.get(d.sanction.community_id)?.community.name ?? "a community";
      const why = d.sanction.reason ? ` Reason: ${d.sanction.reason}` : "";
      if (d.lifted) {
        liftTimeout(d.sanction.community_id);
        renderGate();
        showNotice(`Your timeout in ${where} was lifted; you can post again.`);
      } else if (d.sanction.kind === "timeout") {
        noteTimeout(d.sanction.community_id, d.sanction.expires_at, d.sanction.reason, where);
        renderGate();
        const until = new Date(d.sanction.expires_at).toLocaleString([], { hour: "2-digit", minute: "2-digit" });
        showError(`You are timed out in ${where} until ${until}.${why}`);
      } else showError(`A moderator warned you in ${where}.${why}`);
      break;
    }
    default: break; // member_* and future events: nothing to show yet
  }
}

function onMessageCreate(m) {
  const ch = state.channels.get(m.channel_id);
  if (ch && m.seq > ch.last_seq) state.channels.set(ch.id, { ...ch, last_seq: m.seq });
  if (m.nonce && state.pending.delete(m.nonce)) { /* our own send, confirmed */ }
  state.typing.delete(`${m.channel_id}:${m.author.id}`);
  renderTyping();
  rememberUser(m.author);
  if (m.channel_id === threads.openId) {
    threads.onMessage(m);
  } else if (m.channel_id === state.current) {
    upsert(m);
    markReadSoon();
  } else if (m.author.id !== state.me?.id) {
    const rs = state.readStates.get(m.channel_id)
      ?? { channel_id: m.channel_id, last_read_seq: 0, unread_count: 0, mention_count: 0 };
    const role = ch?.community_id ? state.communities.get(ch.community_id)?.role : null;
    const mentioned = m.mention_everyone || m.mention_user_ids?.includes(state.me.id)
      || (role && m.mention_roles?.includes(role));
    state.readStates.set(m.channel_id, { ...rs, unread_count: rs.unread_count + 1,
      mention_count: rs.mention_count + (mentioned ? 1 : 0) });
    renderSidebar();
    if (ch?.kind === "thread" && ch.parent_id === state.current) rerenderMessages();
  }
}

function onReaction(d) {
  const key = `${d.message_id}:${d.emoji}`;
  if (d.user_id === state.me?.id) {
    if (d.t === "reaction_add") state.myReactions.add(key); else state.myReactions.delete(key);
  }
  const inThread = d.channel_id === threads.openId;
  const m = inThread ? threads.find(d.message_id) : state.messages.find((x) => x.id === d.message_id);
  if (!m) return;
  const reactions = m.reactions.filter((r) => r.emoji !== d.emoji);
  if (d.count > 0) {
    const at = m.reactions.findIndex((r) => r.emoji === d.emoji);
    reactions.splice(at < 0 ? reactions.length : at, 0, { emoji: d.emoji, count: d.count });
  }
  if (inThread) threads.upsert({ ...m, reactions }); else upsert({ ...m, reactions });
}

function onTyping(d) {
  if (d.user.id === state.me?.id) return;
  const now = Date.now();
  const until = Math.min(Math.max(d.expires_at, now + 1000), now + state.limits.typing_ttl_ms);
  state.typing.set(`${d.channel_id}:${d.user.id}`, { channel_id: d.channel_id, user: d.user, until });
  renderTyping();
}

setInterval(() => {
  const now = Date.now();
  let changed = false;
  for (const [k, t] of state.typing) if (t.until <= now) { state.typing.delete(k); changed = true; }
  if (changed) renderTyping();
}, 500);

// --------------------------------------------------------------------------- channels

function sortedChannels(communityId) {
  return [...state.channels.values()]
    .filter((c) => (communityId === undefined || c.community_id === communityId)
      && c.kind !== "category" && c.kind !== "thread")
    .sort((a, b) => a.position - b.position || a.id - b.id);
}

const isDm = (c) => c?.kind === "dm" || c?.kind === "group_dm";
const channelLabel = (c) => (isDm(c) ? "@" : "#");
const channelName = (c) => (isDm(c) ? dmName(c, state.me?.id) : c.name);

/** Threads of a channel, newest first (archived ones stay out of the sidebar). */
function threadsOf(channelId) {
  return [...state.channels.values()]
    .filter((c) => c.kind === "thread" && c.parent_id === channelId && !c.archived)
    .sort((a, b) => b.id - a.id);
}
const threadOfMessage = (messageId) => [...state.channels.values()]
  .find((c) => c.kind === "thread" && c.thread_root_message_id === messageId) ?? null;

let loadGeneration = 0;
async function selectChannel(id) {
  state.current = id;
  state.messages = [];
  state.hasMore = false;
  state.loaded = false;
  state.replyTo = null;
  const rs = state.readStates.get(id);
  state.dividerSeq = rs?.unread_count > 0 ? rs.last_read_seq : null;
  store.set("channel", id);
  list.reset();
  renderSidebar();
  renderHeader();
  renderMessages({ toBottom: true });
  renderTyping();
  renderReplyBar();
  renderMembers();
  const input = $("composer-input");
  input.disabled = $("send-button").disabled = !id;
  if (!id) return;
  renderGate();
  const cid = state.channels.get(id)?.community_id ?? null;
  const large = (c) => (state.communities.get(c)?.member_count ?? 0)
    > (state.limits.presence_auto_max_members ?? Infinity);
  // A large community's presence only flows while subscribed: re-read its list then.
  if (cid && large(cid) && people.subscribed !== cid) people.loading.delete(cid);
  watchPresence(cid, large);
  if (cid) loadMembers(cid).then(() => renderMembers()).catch(showError);
  if (!input.disabled) input.focus();
  const gen = ++loadGeneration;
  try {
    const page = await request("fetch_history", { channel_id: id, limit: PAGE });
    if (gen !== loadGeneration) return;
    const live = state.messages; // messages that arrived while loading
    state.messages = page.messages;
    live.forEach((m) => upsert(m, false));
    page.messages.forEach((m) => rememberUser(m.author));
    state.hasMore = page.has_more;
    state.loaded = true;
    renderMessages({ toBottom: true });
    markReadSoon();
  } catch (err) { if (gen === loadGeneration) showError(err); }
}

async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.messages.length) return false;
  state.loadingOlder = true;
  const id = state.current;
  try {
    const page = await request("fetch_history",
      { channel_id: id, before: state.messages[0].seq, limit: PAGE });
    if (id !== state.current) return false;
    const known = new Set(state.messages.map((m) => m.id));
    state.messages = [...page.messages.filter((m) => !known.has(m.id)), ...state.messages];
    page.messages.forEach((m) => rememberUser(m.author));
    state.hasMore = page.has_more;
    list.olderLoaded();
    return true;
  } catch (err) { showError(err); return false; } finally { state.loadingOlder = false; }
}

const MAX_SEEK_PAGES = 40;
/** Load older pages until `found()` holds (a reply's original, the first unread), at
 * most MAX_SEEK_PAGES pages (2,000 messages) back. */
async function seek(found) {
  for (let i = 0; i < MAX_SEEK_PAGES && !found(); i++) {
    if (!state.hasMore) break;
    if (state.loadingOlder) { await new Promise((r) => setTimeout(r, 50)); continue; }
    if (!await loadOlder()) break;
  }
  return found();
}

function flash(li) {
  if (!li) return;
  li.scrollIntoView({ block: "center" });
  li.classList.add("highlight");
  setTimeout(() => li.classList.remove("highlight"), 1600);
}

async function jumpToMessage(messageId) {
  const byId = () => state.messages.find((x) => x.id === messageId);
  if (!await seek(byId)) { showNotice("That message is too far back to jump to."); return; }
  flash(list.reveal(byId().seq));
}

async function jumpToFirstUnread() {
  const after = state.dividerSeq;
  if (after == null) return;
  const oldestLoaded = () => (state.messages[0]?.seq ?? 0) <= after + 1 || !state.hasMore;
  await seek(oldestLoaded);
  const seq = firstUnreadSeq();
  if (seq != null) flash(list.reveal(seq));
}

function markRead(channelId, seq) {
  const rs = state.readStates.get(channelId);
  if (!seq || document.visibilityState !== "visible") return;
  if (rs && rs.last_read_seq >= seq && !rs.unread_count) return;
  state.readStates.set(channelId, { channel_id: channelId, last_read_seq: seq, unread_count: 0, mention_count: 0 });
  renderSidebar();
  rerenderMessages();
  request("mark_read", { channel_id: channelId, seq }).then((r) => {
    state.readStates.set(channelId, r.read_state);
    renderSidebar();
  }).catch(showError);
}

let markTimer = null;
function markReadSoon() {
  clearTimeout(markTimer);
  markTimer = setTimeout(() => {
    const ch = state.channels.get(state.current);
    const last = state.messages.at(-1)?.seq ?? 0;
    if (ch) markRead(ch.id, Math.max(last, ch.last_seq ?? 0));
  }, 300);
}
document.addEventListener("visibilitychange", () => markReadSoon());

// --------------------------------------------------------------------------- messages

function upsert(m, render = true) {
  const i = state.messages.findIndex((x) => x.id === m.id);
  if (i >= 0) state.messages[i] = m;
  else {
    let at = state.messages.length;
    while (at > 0 && state.messages[at - 1].seq > m.seq) at--;
    state.messages.splice(at, 0, m);
  }
  if (render) renderMessages();
}

function randomNonce() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A refused send may tell us about a timeout or a lock the page did not know of. */
function learnFromError(err, channelId) {
  const ch = state.channels.get(channelId);
  if (err?.code === "timed_out" && ch?.community_id && err.retryAfterMs > 0) {
    const where = state.communities.get(ch.community_id)?.community.name;
    noteTimeout(ch.community_id, Date.now() + err.retryAfterMs, null, where);
    renderGate();
  } else if (err?.code === "channel_locked" && ch && !ch.locked) {
    state.channels.set(ch.id, { ...ch, locked: true });
    renderGate();
  }
}

function sendMessage(content, nonce = randomNonce(), replyTo = null) {
  const channelId = state.current;
  state.pending.set(nonce, { nonce, channel_id: channelId, content, error: null, replyTo });
  renderMessages({ toBottom: true });
  const fields = { channel_id: channelId, content, nonce };
  if (replyTo) fields.reply_to_id = replyTo;
  request("send_message", fields).then((r) => {
    state.pending.delete(nonce);
    onMessageCreate(r.message);
  }).catch((err) => {
    const p = state.pending.get(nonce);
    if (p) p.error = err;
    renderMessages();
    learnFromError(err, channelId);
    showError(err);
  });
}

/** A thread's composer: no optimistic copy, the panel shows the stored message. */
function sendTo(channelId, content) {
  return request("send_message", { channel_id: channelId, content, nonce: randomNonce() })
    .then((r) => r.message).catch((err) => { learnFromError(err, channelId); throw err; });
}

function toggleReaction(m, emoji) {
  const key = `${m.id}:${emoji}`;
  const mine = state.myReactions.has(key);
  request(mine ? "remove_reaction" : "add_reaction",
    { channel_id: m.channel_id, message_id: m.id, emoji }).then(() => {
    if (mine) state.myReactions.delete(key); else state.myReactions.add(key);
    rerenderMessages();
  }).catch((err) => { learnFromError(err, m.channel_id); showError(err); });
}

function addReaction(m, emoji) {
  if (state.myReactions.has(`${m.id}:${emoji}`)) return;
  toggleReaction(m, emoji);
}

function startEdit(li, m) {
  li.classList.add("editing");
  const box = el("textarea", { class: "edit-input", value: m.content, rows: 2,
    ariaLabel: "Edit message", dataTestid: "edit-input" });
  const content = li.querySelector(".content");
  content.replaceWith(box);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  const stop = () => {
    li.classList.remove("editing");
    box.replaceWith(content);
    rerenderMessages();
    $("composer-input").focus();
  };
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") stop();
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      const text = box.value.trim();
      if (text && text !== m.content) {
        request("edit_message", { channel_id: m.channel_id, message_id: m.id, content: text })
          .then((r) => { if (r.message.channel_id === threads.openId) threads.upsert(r.message); else upsert(r.message); })
          .catch(showError);
      }
      stop();
    }
  });
}

/** Whether I may delete others' messages in this channel (MANAGE_MESSAGES or staff);
 * the server checks again, this only decides whether to offer the button. */
function canManageMessages(channelId) {
  let ch = state.channels.get(channelId);
  if (ch?.kind === "thread") ch = state.channels.get(ch.parent_id) ?? ch;
  const c = ch?.community_id ? state.communities.get(ch.community_id) : null;
  if (!c) return false;
  return c.permissions ? (c.permissions & ((1 << 10) | (1 << 30))) !== 0 : STAFF_ROLES.has(c.role);
}

const mentionCtx = () => ({
  user: (id) => userById(id),
  channel: (id) => state.channels.get(id) ?? null,
  meId: state.me?.id,
});

function replyQuote(m) {
  const original = state.messages.find((x) => x.id === m.reply_to_id) ?? threads.find(m.reply_to_id);
  const text = original ? plainText(original.content, mentionCtx()) : "Original message";
  return el("button", { type: "button", class: "reply-quote", dataAction: "jump-reply",
    dataTestid: "reply-quote", dataReplyTo: m.reply_to_id, title: "Jump to the original message" },
  el("span", { class: "reply-author", text: original ? nameOf(original.author) : "" }),
  el("span", { class: "reply-text", text: text.length > 120 ? `${text.slice(0, 119)}…` : text }));
}

function threadButton(m) {
  const thread = threadOfMessage(m.id);
  if (!thread) return null;
  const rs = state.readStates.get(thread.id);
  const unread = rs?.unread_count > 0 && thread.id !== threads.openId ? rs.unread_count : 0;
  return el("button", { type: "button", class: "thread-chip", dataAction: "open-thread",
    dataThreadId: thread.id, dataTestid: "thread-chip" },
  `🧵 ${thread.name}`, unread ? el("span", { class: "badge", dataTestid: "thread-unread",
    ariaLabel: `${unread} unread in thread`, text: String(unread) }) : null);
}

function messageNode(m) {
  const own = m.author.id === state.me?.id;
  const manage = !own && canManageMessages(m.channel_id);
  const ch = state.channels.get(m.channel_id);
  const canThread = ch && (ch.kind === "text" || ch.kind === "announcement") && !threadOfMessage(m.id);
  const time = new Date(m.created_at);
  const content = el("div", { class: "content", dataTestid: "message-content" });
  content.append(renderMarkdown(m.content, mentionCtx()));
  const mentionsMe = m.mention_everyone || m.mention_user_ids?.includes(state.me?.id);
  const li = el("li", { class: `message${own ? " own" : ""}${mentionsMe ? " mentions-me" : ""}`,
    dataTestid: "message", dataKey: `m${m.id}`, dataSeq: m.seq, dataId: m.id,
    dataAuthor: m.author.username },
  m.reply_to_id ? replyQuote(m) : null,
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(m.author)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("button", { type: "button", class: "author link", dataTestid: "message-author",
      dataAction: "profile", dataUserId: m.author.id, text: nameOf(m.author) }),
    el("time", { dateTime: time.toISOString(), title: time.toLocaleString(),
      text: time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }),
    m.edited_at ? el("span", { class: "edited muted", text: "(edited)" }) : null),
  content,
  el("div", { class: "reactions" }, ...m.reactions.map((r) => {
    const mine = state.myReactions.has(`${m.id}:${r.emoji}`);
    return el("button", { type: "button", class: `reaction${mine ? " mine" : ""}`,
      dataTestid: "reaction", dataAction: "react", dataEmoji: r.emoji,
      ariaPressed: String(mine), ariaLabel: `${r.emoji} ${r.count}` },
    `${r.emoji} `, el("span", { class: "count", dataTestid: "reaction-count", text: String(r.count) }));
  })),
  m.channel_id === state.current ? threadButton(m) : null,
  el("div", { class: "actions" },
    el("button", { type: "button", class: "icon", dataAction: "react", dataEmoji: QUICK_EMOJI,
      dataTestid: "react-button", ariaLabel: "React with thumbs up", title: "React" }, icon("thumb")),
    el("button", { type: "button", class: "icon", dataAction: "pick-reaction", dataOpensPicker: "true",
      dataTestid: "emoji-picker-button", ariaLabel: "Add a reaction", title: "Add a reaction" }, icon("smile")),
    el("button", { type: "button", class: "icon", dataAction: "reply",
      dataTestid: "reply-button", ariaLabel: "Reply", title: "Reply" }, icon("reply")),
    canThread ? el("button", { type: "button", class: "icon", dataAction: "start-thread",
      dataTestid: "thread-button", ariaLabel: "Start a thread", title: "Start a thread" }, icon("thread")) : null,
    own ? el("button", { type: "button", class: "icon", dataAction: "edit",
      dataTestid: "edit-button", ariaLabel: "Edit message", title: "Edit" }, icon("edit")) : null,
    own || manage ? el("button", { type: "button", class: "icon", dataAction: "delete",
      dataTestid: "delete-button", ariaLabel: "Delete message", title: "Delete" }, icon("trash"))
      : null,
    own ? null : el("button", { type: "button", class: "icon", dataAction: "report",
      dataTestid: "report-button", ariaLabel: "Report message to the moderators",
      title: "Report" }, icon("flag"))));
  li.style.setProperty("--hue", hue(m.author.id));
  li.message = m;
  li.renderKey = renderKey(m);
  return li;
}

/** What a rendered message depends on besides itself: names, my reactions, its thread. */
function renderKey(m) {
  const thread = threadOfMessage(m.id);
  const rs = thread ? state.readStates.get(thread.id) : null;
  return `${people.users.size}|${[...m.reactions].map((r) => state.myReactions.has(`${m.id}:${r.emoji}`)).join()}`
    + `|${thread?.id ?? ""}:${rs?.unread_count ?? 0}:${threads.openId === thread?.id}`;
}

function pendingNode(p) {
  const li = el("li", { class: `message own pending${p.error ? " failed" : ""}`,
    dataTestid: "message", dataKey: `p${p.nonce}`, dataPending: "true" },
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(state.me)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("span", { class: "author", text: nameOf(state.me) }),
    el("span", { class: "muted", dataTestid: "message-status", dataErrorCode: p.error?.code,
      text: p.error ? `not sent — ${errorText(p.error)}` : "sending…" }),
    p.error ? el("button", { type: "button", class: "link", dataAction: "retry",
      dataNonce: p.nonce, dataTestid: "retry-button", text: "Retry" }) : null,
    p.error ? el("button", { type: "button", class: "link", dataAction: "discard",
      dataNonce: p.nonce, dataTestid: "discard-button", text: "Discard" }) : null),
  el("div", { class: "content", dataTestid: "message-content", text: p.content }));
  li.style.setProperty("--hue", hue(state.me?.id ?? 0));
  return li;
}

const GROUP_MS = 5 * 60000;

/** The seq of the first message from someone else after the read mark, if any. */
function firstUnreadSeq() {
  if (state.dividerSeq == null) return null;
  return state.messages.find((m) => m.seq > state.dividerSeq && m.author.id !== state.me?.id)?.seq ?? null;
}
const divider = el("li", { class: "new-divider", dataKey: "divider", dataTestid: "new-messages-divider",
  role: "separator" }, el("span", { text: "New messages" }));

/** The nodes of a window of messages: reused when unchanged, grouped by author. */
function buildNodes(slice, { atEnd, start }) {
  const list = $("messages");
  const existing = new Map([...list.children].map((li) => [li.dataset.key, li]));
  const wanted = [];
  let prev = start > 0 ? state.messages[start - 1] : null;
  const firstUnread = firstUnreadSeq();
  for (const m of slice) {
    if (m.seq === firstUnread) {
      wanted.push(divider);
      prev = null;
    }
    let li = existing.get(`m${m.id}`);
    if (!li || ((li.message !== m || li.renderKey !== renderKey(m)) && !li.classList.contains("editing"))) {
      li = messageNode(m);
    }
    li.classList.toggle("continued", !!prev && prev.author.id === m.author.id && !m.reply_to_id
      && m.created_at - prev.created_at < GROUP_MS);
    prev = m;
    wanted.push(li);
  }
  if (atEnd) {
    for (const p of state.pending.values()) {
      if (p.channel_id === state.current) wanted.push(existing.get(`p${p.nonce}`)?.pendingOf === p
        && !p.error ? existing.get(`p${p.nonce}`) : Object.assign(pendingNode(p), { pendingOf: p }));
    }
  }
  if (!wanted.length && state.current) {
    wanted.push(el("li", { class: "empty muted", dataKey: "empty",
      text: state.loaded ? "No messages yet — say hello!" : "Loading…" }));
  }
  return wanted;
}

const list = new WindowedList($("messages"), {
  items: () => state.messages,
  build: buildNodes,
  onNeedOlder: () => loadOlder(),
  onChange: ({ nearBottom }) => renderJumpBar(nearBottom),
});

function renderMessages({ toBottom = false } = {}) {
  list.render({ toBottom });
}

/** Re-render after something a message shows changed (names, thread badges). */
function rerenderMessages() { list.render(); }

function renderJumpBar(nearBottom = true) {
  const firstUnread = firstUnreadSeq();
  const notLoadedYet = state.hasMore && (state.messages[0]?.seq ?? 0) > state.dividerSeq + 1;
  const unreadOutOfView = state.dividerSeq != null && (firstUnread == null ? notLoadedYet
    : !list.isRendered(firstUnread) || $("messages").querySelector("[data-key=divider]")
      ?.getBoundingClientRect().bottom < $("messages").getBoundingClientRect().top);
  $("jump-unread").hidden = !unreadOutOfView;
  $("jump-latest").hidden = nearBottom;
}

// ------------------------------------------------------------------------- rendering

function renderSidebar() {
  const root = $("community-list");
  const sections = [...state.communities.values()]
    .sort((a, b) => a.community.id - b.community.id)
    .map(({ community }) => [community.name, community.id, sortedChannels(community.id)]);
  sections.push(["Direct messages", null, sortedChannels(null)]);
  const link = (c, extra = "") => {
    const rs = state.readStates.get(c.id);
    const active = c.id === state.current || c.id === threads.openId;
    const unread = !active && rs?.unread_count > 0;
    const thread = c.kind === "thread";
    return el("li", { class: extra }, el("button", { type: "button",
      class: `channel-link${thread ? " thread-link" : ""}${active ? " active" : ""}${unread ? " unread" : ""}`,
      dataTestid: thread ? "thread-link" : "channel-link", dataChannelId: c.id,
      dataChannelName: c.name, dataThread: thread ? "true" : null,
      ariaCurrent: c.id === state.current ? "page" : null },
    el("span", { class: "hash", ariaHidden: "true", text: thread ? "🧵" : channelLabel(c) }),
    el("span", { class: "name", text: channelName(c) || "direct message" }),
    unread ? el("span", { class: `badge${rs.mention_count ? " mention" : ""}`,
      dataTestid: "unread-badge", ariaLabel: `${rs.unread_count} unread`,
      text: String(rs.mention_count || rs.unread_count) }) : null));
  };
  root.replaceChildren(...sections.map(([name, cid, channels]) => el("section",
    { class: "community", dataTestid: cid ? "community" : "dm-list", dataCommunityId: cid ?? "" },
    el("h3", {}, name, cid ? null : el("button", { type: "button", class: "link new-group",
      dataAction: "new-group", dataTestid: "new-group-dm", title: "Start a group message", text: "+ group" })),
    el("ul", {}, ...channels.flatMap((c) => [link(c), ...threadsOf(c.id).map((t) => link(t, "thread-item"))]),
      !cid && !channels.length ? el("li", { class: "muted hint", text: "Start one from the member list." }) : null))));
}

function renderHeader() {
  const ch = state.channels.get(state.current);
  $("channel-title").textContent = ch ? `${channelLabel(ch)} ${channelName(ch)}` : "Hearth";
  $("channel-topic").textContent = ch?.topic ?? "";
  $("composer-input").placeholder = ch ? `Message ${channelLabel(ch)}${channelName(ch)}` : "Message";
  const role = ch?.community_id ? state.communities.get(ch.community_id)?.role : null;
  $("invite-button").hidden = !role || role === "member";
  $("invite-output").textContent = "";
  renderModLink();
}

function gateFor(ch) {
  const parent = ch?.kind === "thread" ? state.channels.get(ch.parent_id) : null;
  const cid = ch?.community_id;
  return composerGate(ch?.kind === "thread" && !ch.archived && parent?.locked ? { ...ch, locked: true } : ch, {
    communityName: cid ? state.communities.get(cid)?.community.name : "",
    canModerate: canManageMessages(ch?.id),
  });
}

let gateTimer = null;
/** Enable or disable the composer from the server's moderation state, with the reason
 * and, for a timeout, the time left (ticking each second until it ends). */
function renderGate() {
  clearInterval(gateTimer);
  const ch = state.channels.get(state.current);
  const gate = gateFor(ch);
  const box = $("composer-gate");
  box.textContent = gate.text;
  box.dataset.kind = gate.kind;
  box.hidden = !ch || !gate.blocked;
  $("composer-input").disabled = $("send-button").disabled = !ch || gate.blocked;
  $("emoji-button").disabled = !ch || gate.blocked;
  if (gate.kind === "timeout") gateTimer = setInterval(renderGate, 1000);
  if (threads.openId) threads.refreshHeader();
}

function renderMembers() {
  const ch = state.channels.get(state.current);
  const cid = ch?.community_id ?? null;
  $("member-count").textContent = cid ? String(people.communities.get(cid)?.size ?? "") : "";
  $("group-bar").hidden = !state.groupMode;
  $("group-create").disabled = state.groupPick.size < 1;
  renderMemberList($("member-list"), cid, { meId: state.me?.id, groupMode: state.groupMode && !!cid,
    selected: state.groupPick, dmUserIds: isDm(ch) ? ch.member_ids : null });
}

const memberReloads = new Map(); // community id -> timer
/** Re-read a community's member list once things settle (someone unknown appeared). */
function reloadMembersSoon(communityId) {
  if (memberReloads.has(communityId)) return;
  memberReloads.set(communityId, setTimeout(() => {
    memberReloads.delete(communityId);
    loadMembers(communityId, { force: true }).then(() => { renderMembers(); renderSidebar(); })
      .catch(showError);
  }, 300));
}

function renderReplyBar() {
  const m = state.replyTo;
  $("reply-bar").hidden = !m;
  if (m) $("reply-bar-text").textContent = `Replying to ${nameOf(m.author)}: ${plainText(m.content, mentionCtx()).slice(0, 80)}`;
}

async function openDm(userIds) {
  try {
    const { channel } = await api("POST", "/dms", { user_ids: userIds });
    state.channels.set(channel.id, channel);
    state.groupMode = false;
    state.groupPick.clear();
    selectChannel(channel.id);
  } catch (err) { showError(err); }
}

function openThread(thread) {
  threads.open(thread);
  renderSidebar();
  rerenderMessages();
}

async function startThread(m) {
  try {
    const { channel } = await request("create_thread",
      { channel_id: m.channel_id, name: threadNameFor(plainText(m.content, mentionCtx())), message_id: m.id });
    state.channels.set(channel.id, channel);
    openThread(channel);
  } catch (err) { learnFromError(err, m.channel_id); showError(err); }
}

/** Who reacted with an emoji: asked when the pointer rests on a reaction. */
async function showReactors(btn, m) {
  const emoji = btn.dataset.emoji;
  document.querySelector(".reactors")?.remove();
  try {
    const { users } = await request("fetch_reactions", { channel_id: m.channel_id, message_id: m.id, emoji });
    users.forEach(rememberUser);
    const mine = users.some((u) => u.id === state.me?.id);
    const key = `${m.id}:${emoji}`;
    if (mine !== state.myReactions.has(key)) {
      if (mine) state.myReactions.add(key); else state.myReactions.delete(key);
    }
    if (!btn.isConnected || !btn.matches(":hover")) return;
    const names = users.map((u) => (u.id === state.me?.id ? "you" : nameOf(u)));
    const pop = el("div", { class: "reactors", role: "tooltip", dataTestid: "reaction-users" },
      el("span", { class: "reactors-emoji", text: emoji }),
      el("span", { text: names.length ? `Reacted by ${names.join(", ")}` : "No reactions" }));
    document.body.append(pop);
    const r = btn.getBoundingClientRect();
    pop.style.left = `${Math.max(8, r.left)}px`;
    pop.style.top = `${Math.max(8, r.top - pop.offsetHeight - 6)}px`;
    btn.addEventListener("mouseleave", () => pop.remove(), { once: true });
  } catch (err) { showError(err); }
}

function renderTyping() {
  const names = [...state.typing.values()]
    .filter((t) => t.channel_id === state.current && t.until > Date.now()).map((t) => nameOf(t.user));
  $("typing").textContent = names.length === 0 ? ""
    : names.length === 1 ? `${names[0]} is typing…`
    : names.length <= 3 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`
    : "Several people are typing…";
}

function showChat() {
  $("auth-view").hidden = true;
  $("chat-view").hidden = false;
  $("me-name").textContent = nameOf(state.me);
  $("me-avatar").textContent = nameOf(state.me)[0].toUpperCase();
  $("me-avatar").style.setProperty("--hue", hue(state.me.id));
}

function showAuth(message = "") {
  $("chat-view").hidden = true;
  $("auth-view").hidden = false;
  $("auth-error").textContent = message;
  $("auth-username").focus();
}

function logout(message = "") {
  signOut();
  Object.assign(state, { me: null, current: null, messages: [] });
  state.pending.clear();
  state.typing.clear();
  state.myReactions.clear();
  $("messages").replaceChildren();
  threads.close();
  list.reset();
  showAuth(message);
}

// ---------------------------------------------------------------------------- wiring

$("auth-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const mode = ev.submitter?.value === "register" ? "register" : "login";
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const body = { username, password };
  const display = $("auth-display-name").value.trim();
  if (mode === "register" && display) body.display_name = display;
  $("auth-error").textContent = "";
  for (const b of ev.target.querySelectorAll("button")) b.disabled = true;
  try {
    saveTokens(await api("POST", `/auth/${mode}`, body, { auth: false }));
    $("auth-password").value = "";
    connect();
  } catch (err) {
    $("auth-error").textContent = `${err.code}: ${err.detail}`;
  } finally {
    for (const b of ev.target.querySelectorAll("button")) b.disabled = false;
  }
});

$("logout").addEventListener("click", () => logout());
$("error-close").addEventListener("click", () => { $("error-banner").hidden = true; });

$("community-list").addEventListener("click", (ev) => {
  if (ev.target.closest("[data-action=new-group]")) {
    state.groupMode = !state.groupMode;
    state.groupPick.clear();
    renderMembers();
    return;
  }
  const btn = ev.target.closest("[data-channel-id]");
  if (!btn) return;
  const ch = state.channels.get(Number(btn.dataset.channelId));
  if (ch?.kind === "thread") openThread(ch); else selectChannel(Number(btn.dataset.channelId));
});

$("create-community-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("new-community-name");
  try {
    const r = await api("POST", "/communities", { name: input.value.trim() });
    addSnapshot(r.snapshot ?? { community: r.community, role: "owner", channels: r.channels });
    input.value = "";
    selectChannel(r.channels[0]?.id ?? null);
  } catch (err) { showError(err); }
});

$("join-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("invite-code-input");
  try {
    const { snapshot } = await api("POST", `/invites/${encodeURIComponent(input.value.trim())}/join`);
    addSnapshot(snapshot);
    input.value = "";
    selectChannel(sortedChannels(snapshot.community.id)[0]?.id ?? null);
  } catch (err) { showError(err); }
});

$("invite-button").addEventListener("click", async () => {
  const ch = state.channels.get(state.current);
  if (!ch?.community_id) return;
  try {
    const { code } = await api("POST", `/communities/${ch.community_id}/invites`, {});
    $("invite-output").textContent = `Invite code: ${code}`;
  } catch (err) { showError(err); }
});

/** Clicks on messages, in the channel and in the thread panel alike. */
function onMessageClick(ev) {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const { action } = btn.dataset;
  if (action === "retry" || action === "discard") {
    const p = state.pending.get(btn.dataset.nonce);
    state.pending.delete(btn.dataset.nonce);
    if (p && action === "retry") sendMessage(p.content, p.nonce, p.replyTo); else renderMessages();
    return;
  }
  const li = btn.closest("li.message");
  const m = li?.message;
  if (!m) return;
  if (action === "react") toggleReaction(m, btn.dataset.emoji);
  else if (action === "pick-reaction") openPicker(btn, (emoji) => addReaction(m, emoji));
  else if (action === "reply") {
    state.replyTo = m;
    renderReplyBar();
    $("composer-input").focus();
  } else if (action === "jump-reply") jumpToMessage(m.reply_to_id);
  else if (action === "start-thread") startThread(m);
  else if (action === "open-thread") {
    const thread = state.channels.get(Number(btn.dataset.threadId));
    if (thread) openThread(thread);
  } else if (action === "profile") {
    showProfile(btn, userById(Number(btn.dataset.userId)) ?? m.author,
      { meId: state.me?.id, onMessage: (u) => openDm([u.id]) });
  } else if (action === "edit") startEdit(li, m);
  else if (action === "delete" && m.author.id !== state.me?.id) {
    // A moderator deleting someone else's message: the reason goes to the audit log.
    const reason = window.prompt(`Delete ${nameOf(m.author)}'s message? Reason (audit log):`);
    if (reason == null) return;
    if (!reason.trim()) { showError("A reason is needed to delete someone else's message."); return; }
    request("delete_message", { channel_id: m.channel_id, message_id: m.id, reason: reason.trim() })
      .catch(showError);
  } else if (action === "delete" && window.confirm("Delete this message?")) {
    request("delete_message", { channel_id: m.channel_id, message_id: m.id }).catch(showError);
  } else if (action === "report") {
    const reason = window.prompt("Why are you reporting this message? The moderators will see it.");
    if (reason == null) return;
    if (!reason.trim()) { showError("Please say why you are reporting this message."); return; }
    request("report_message", { channel_id: m.channel_id, message_id: m.id, reason: reason.trim() })
      .then(() => showNotice("Thanks — the moderators have been told.")).catch(showError);
  }
}
$("messages").addEventListener("click", onMessageClick);
$("thread-messages").addEventListener("click", onMessageClick);
for (const root of [$("messages"), $("thread-messages")]) {
  root.addEventListener("mouseover", (ev) => {
    const btn = ev.target.closest("[data-testid=reaction]");
    if (!btn || btn.contains(ev.relatedTarget)) return;
    const m = btn.closest("li.message")?.message;
    if (m) showReactors(btn, m);
  });
}

const threads = new ThreadPanel($("thread-panel"), {
  messageNode,
  showError,
  markRead,
  send: sendTo,
  channel: (id) => state.channels.get(id) ?? null,
  gate: gateFor,
  closed: () => { renderSidebar(); rerenderMessages(); },
});

$("jump-unread").addEventListener("click", () => jumpToFirstUnread());
$("jump-latest").addEventListener("click", () => renderMessages({ toBottom: true }));
$("reply-cancel").addEventListener("click", () => { state.replyTo = null; renderReplyBar(); });

$("member-list").addEventListener("click", (ev) => {
  const pick = ev.target.closest("input[data-action=pick], input.group-pick");
  if (pick) {
    const id = Number(pick.dataset.userId);
    if (pick.checked) state.groupPick.add(id); else state.groupPick.delete(id);
    $("group-create").disabled = state.groupPick.size < 1;
    return;
  }
  const btn = ev.target.closest("[data-action=profile]");
  if (btn) {
    showProfile(btn, userById(Number(btn.dataset.userId)),
      { meId: state.me?.id, onMessage: (u) => openDm([u.id]) });
  }
});
$("group-create").addEventListener("click", () => openDm([...state.groupPick]));
$("group-cancel").addEventListener("click", () => {
  state.groupMode = false;
  state.groupPick.clear();
  renderMembers();
});
$("members-toggle").addEventListener("click", () => {
  const panel = $("member-panel");
  panel.hidden = !panel.hidden;
  $("members-toggle").setAttribute("aria-expanded", String(!panel.hidden));
});

const composer = $("composer-input");
const FIXED_ROLES = ["everyone", "here", "owner", "admin", "moderator", "member"];
const autocomplete = new Autocomplete(composer, (kind, query) => {
  const ch = state.channels.get(state.current);
  const cid = ch?.community_id;
  const q = query.toLowerCase();
  if (kind === "#") {
    return sortedChannels(cid ?? null).filter((c) => !isDm(c) && c.name.toLowerCase().startsWith(q))
      .slice(0, 8).map((c) => ({ label: `#${c.name}`, text: `#${c.name}`, token: `<#${c.id}>` }));
  }
  const users = cid ? membersMatching(cid, query)
    : (ch?.member_ids ?? []).map(userById).filter((u) => u && nameOf(u).toLowerCase().startsWith(q));
  const options = users.map((u) => ({ label: `@${nameOf(u)}`, detail: u.username, text: `@${nameOf(u)}`,
    token: `<@${u.id}>` }));
  if (cid) {
    for (const r of FIXED_ROLES) {
      if (r.startsWith(q)) {
        const token = r === "everyone" || r === "here" ? `@${r}` : `<@&${r}>`;
        options.push({ label: `@${r}`, detail: r === "everyone" || r === "here" ? "notify everyone" : "role",
          text: `@${r}`, token });
      }
    }
  }
  return options.slice(0, 10);
});

/** ↑ in an empty composer edits my last message in this channel. */
function editLastMessage() {
  const mine = [...state.messages].reverse().find((m) => m.author.id === state.me?.id);
  if (!mine) return false;
  list.reveal(mine.seq);
  const li = $("messages").querySelector(`[data-key="m${mine.id}"]`);
  if (!li) return false;
  li.scrollIntoView({ block: "nearest" });
  startEdit(li, mine);
  return true;
}

composer.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  } else if (ev.key === "ArrowUp" && !composer.value && !ev.shiftKey && !ev.isComposing) {
    if (editLastMessage()) ev.preventDefault();
  } else if (ev.key === "Escape" && state.replyTo) {
    state.replyTo = null;
    renderReplyBar();
  }
});
composer.addEventListener("input", () => {
  composer.style.height = "auto";
  composer.style.height = `${Math.min(composer.scrollHeight, 200)}px`;
  const now = Date.now();
  if (composer.value.trim() && state.current && gw.ready
      && now - state.lastTypingSent >= TYPING_EVERY_MS) {
    state.lastTypingSent = now;
    request("typing", { channel_id: state.current }, { retry: false }).catch((err) => {
      if (err.code !== "disconnected") showError(err);
    });
  }
});
$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const content = autocomplete.toWire(composer.value.trim());
  if (!content || !state.current || composer.disabled) return;
  composer.value = "";
  composer.style.height = "auto";
  state.lastTypingSent = 0;
  const replyTo = state.replyTo?.id ?? null;
  state.replyTo = null;
  state.dividerSeq = null; // answering means the unread ones were read
  renderReplyBar();
  sendMessage(content, randomNonce(), replyTo);
});
$("emoji-button").addEventListener("click", (ev) => {
  openPicker(ev.currentTarget, (emoji) => {
    const at = composer.selectionStart ?? composer.value.length;
    composer.value = composer.value.slice(0, at) + emoji + composer.value.slice(composer.selectionEnd ?? at);
    composer.focus();
    composer.setSelectionRange(at + emoji.length, at + emoji.length);
  });
});
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePicker(); });

// Debug/test hook: drop the socket as a network failure would (the client resumes).
window.hearth = { state, gw, people, dropConnection: () => dropSocket(4000, "simulated drop") };

// ------------------------------------------------------------------------------ start

Object.assign(hooks, {
  hello: (f) => { state.limits = f.limits ?? state.limits; },
  ready: onReady,
  event: onEvent,
  status: setStatus,
  authLost: logout,
});
orphanErrors.report = showError;
if (!resumeStoredSession()) showAuth();
