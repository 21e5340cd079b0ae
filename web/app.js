// Hearth web client: plain ES module, no build step, no framework.
// REST for accounts and communities (docs/CONTRACTS.md), the /gateway websocket for
// everything live (protocol/frames.py). One sign-in per browser serves every page and
// tab (session.js: refresh token in an HttpOnly cookie, access token in memory). The
// connection layer (REST, gateway) is gateway.js, shared with the other pages; the
// header is shell.js, errors are worded by errors.js.

import {
  HearthError, api, connect, dropSocket, el, gw, hooks, nameOf, orphanErrors, request,
  resumeStoredSession, signIn, signOut, store, accessToken,
} from "./gateway.js";
import { VOICE_KINDS, voiceChannelLink } from "./channel_kinds.js";
import { Autocomplete, mentionOptions } from "./chat/autocomplete.js";
import { errorText, formatWait } from "./chat/error-texts.js";
import { closePicker, openPicker } from "./chat/emoji.js";
import { composerGate, liftTimeout, noteTimeout } from "./chat/gate.js";
import { WindowedList, insertBySeq } from "./chat/list.js";
import { plainText, renderMarkdown } from "./chat/markdown.js";
import {
  dmName, loadMembers, membersMatching, onMemberJoin, onMemberLeave, onPresence, people,
  rememberUser, renderMemberList, showProfile, userById, watchPresence,
} from "./chat/members.js";
import {
  bindMessageView, buildNodes, firstUnreadSeq, hue, mentionCtx, messageNode, showReactors,
} from "./chat/message-view.js";
import {
  PAGE, bindHistory, jumpToFirstUnread, jumpToLatest, jumpToMessage, loadNewer, loadOlder,
} from "./chat/history.js";
import { renderChannelList } from "./chat/sidebar.js";
import { ThreadPanel, threadNameFor } from "./chat/threads.js";
import { errorCode, friendlyError } from "./errors.js";
import { mountShell } from "./shell.js";

const TYPING_EVERY_MS = 3000;
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
  hasNewer: false, // the loaded run stops before the newest (after a far jump)
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
  $("error-text").textContent = errorText(err);
  $("error-text").dataset.errorCode = errorCode(err);
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


// ----------------------------------------------------------------------------- events

function addSnapshot(snap) {
  state.communities.set(snap.community.id, { community: snap.community, role: snap.role,
    member_count: snap.member_count, permissions: snap.permissions ?? 0 });
  for (const ch of snap.channels) state.channels.set(ch.id, ch);
  // A timeout already running when the page connected (ready carries it), so the
  // composer is closed with the time left from the start, not after a refused send.
  if (snap.timed_out_until) {
    noteTimeout(snap.community.id, snap.timed_out_until, null, snap.community.name);
  }
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
  shell.refresh();
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
  } else if (m.channel_id === state.current && state.hasNewer) {
    // Reading far back: the newest arrives when the run reaches it (loadNewer).
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
  state.hasNewer = false;
  state.loaded = false;
  state.replyTo = null;
  const rs = state.readStates.get(id);
  state.dividerSeq = rs?.unread_count > 0 ? rs.last_read_seq : null;
  store.set("channel", id);
  list.reset();
  shell.setCommunity(state.channels.get(id)?.community_id ?? null);
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
  insertBySeq(state.messages, m);
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
    if (ev.key === "Escape") { ev.preventDefault(); stop(); }
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

bindMessageView({
  state,
  threads: () => threads,
  threadOfMessage,
  canManageMessages,
  listEl: $("messages"),
  namesVersion: () => people.users.size,
  showError,
});

const list = new WindowedList($("messages"), {
  items: () => state.messages,
  build: buildNodes,
  onNeedOlder: () => loadOlder(),
  onNeedNewer: () => loadNewer(),
  onChange: ({ nearBottom }) => renderJumpBar(nearBottom),
});
bindHistory({ state, list, showError, showNotice, selectChannel, renderMessages });

function renderMessages({ toBottom = false } = {}) {
  list.render({ toBottom });
}

/** Re-render after something a message shows changed (names, thread badges). */
function rerenderMessages() { list.render(); }

function renderJumpBar(nearBottom = true) {
  const firstUnread = firstUnreadSeq();
  const notLoadedYet = state.hasMore && (state.messages[0]?.seq ?? 0) > state.dividerSeq + 1;
  // Offered while the first unread is above what the reader sees (not loaded yet, before
  // the rendered window, or scrolled past upwards out of view).
  const unreadOutOfView = state.dividerSeq != null && (firstUnread == null ? notLoadedYet
    : firstUnread < (list.from ?? 0) || (list.isRendered(firstUnread)
      && $("messages").querySelector("[data-key=divider]")?.getBoundingClientRect().bottom
        < $("messages").getBoundingClientRect().top));
  $("jump-unread").hidden = !unreadOutOfView;
  $("jump-latest").hidden = nearBottom && !state.hasNewer;
}

// ------------------------------------------------------------------------- rendering

const FIRST_CHANNELS = "hearth:channels-rendered";

function renderSidebar() {
  renderChannelList($("community-list"), {
    communities: [...state.communities.values()].map((c) => c.community),
    channelsOf: sortedChannels,
    threadsOf,
    readStates: state.readStates,
    current: state.current,
    openThreadId: threads.openId,
    label: channelLabel,
    name: channelName,
    special: (c) => (VOICE_KINDS.has(c.kind) ? voiceChannelLink(c) : null),
  });
  // The first-load figure of docs/BENCHMARKS.md: navigation start until the signed-in
  // reader sees their channels (read by tests/test_browser_polish.py).
  if (state.channels.size && !performance.getEntriesByName(FIRST_CHANNELS).length) {
    performance.mark(FIRST_CHANNELS);
  }
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

// The session ended (signed out here or in another tab, or expired): back to the form.
function logout(message = "") {
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
    await signIn(mode, body);
    $("auth-password").value = "";
    // Sent here from another page to sign in (?next=/mod...): go back there.
    const next = new URLSearchParams(location.search).get("next");
    if (next && /^\/(?!\/)[\w\-/?=&.%]*$/.test(next)) { location.assign(next); return; }
    connect();
  } catch (err) {
    $("auth-error").textContent = friendlyError(err);
    $("auth-error").dataset.errorCode = errorCode(err);
  } finally {
    for (const b of ev.target.querySelectorAll("button")) b.disabled = false;
  }
});

$("logout").addEventListener("click", () => { signOut().catch(showError); });
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
$("jump-latest").addEventListener("click", () => jumpToLatest());
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
function showMembers(show) {
  $("member-panel").hidden = !show;
  $("members-toggle").setAttribute("aria-expanded", String(show));
}
$("members-toggle").addEventListener("click", () => showMembers($("member-panel").hidden));

// On a phone the channel list and the member list are panels over the conversation
// (chat.css): the member list starts closed, picking a channel closes the channel
// list, Escape closes either and gives the focus back to its button.
const phone = window.matchMedia("(max-width: 760px)");
function showSidebar(show) {
  $("chat-view").classList.toggle("show-sidebar", show);
  $("sidebar-toggle").setAttribute("aria-expanded", String(show));
  if (show) $("sidebar").querySelector(".channel-link, button, input")?.focus();
}
$("sidebar-toggle").addEventListener("click", () =>
  showSidebar(!$("chat-view").classList.contains("show-sidebar")));
$("community-list").addEventListener("click", (ev) => {
  if (phone.matches && ev.target.closest(".channel-link")) showSidebar(false);
});
$("chat-view").addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape" || !phone.matches) return;
  if ($("chat-view").classList.contains("show-sidebar") && $("sidebar").contains(ev.target)) {
    showSidebar(false);
    $("sidebar-toggle").focus();
  } else if (!$("member-panel").hidden && $("member-panel").contains(ev.target)) {
    showMembers(false);
    $("members-toggle").focus();
  }
});
if (phone.matches) showMembers(false);

const composer = $("composer-input");
const autocomplete = new Autocomplete(composer, (kind, query) => {
  const ch = state.channels.get(state.current);
  return mentionOptions(kind, query, {
    channel: ch,
    channels: sortedChannels(ch?.community_id ?? null).filter((c) => !isDm(c)),
    members: (q) => (ch?.community_id ? membersMatching(ch.community_id, q)
      : (ch?.member_ids ?? []).map(userById).filter((u) => u && nameOf(u).toLowerCase().startsWith(q.toLowerCase()))),
  });
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
  if (state.hasNewer) selectChannel(state.current); // what is sent shows after the newest
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
window.hearth = { state, gw, people, list, accessToken, dropConnection: () => dropSocket(4000, "simulated drop") };

// ------------------------------------------------------------------------------ start

Object.assign(hooks, {
  hello: (f) => { state.limits = f.limits ?? state.limits; },
  ready: onReady,
  event: onEvent,
  status: setStatus,
  authLost: logout,
});
orphanErrors.report = showError;
const shell = mountShell({
  page: "chat",
  onCommunity: (id) => { const first = sortedChannels(id)[0]; if (first) selectChannel(first.id); },
});
resumeStoredSession().then((signedIn) => { if (!signedIn) showAuth(); });
