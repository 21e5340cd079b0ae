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
import { errorCode, friendlyError } from "./errors.js";
import { mountShell } from "./shell.js";

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
};

// ------------------------------------------------------------------------ errors / UI

let errorTimer = null;
function showError(err) {
  $("error-text").textContent = friendlyError(err);
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

// Icon paths from Material Design Icons (Apache-2.0); SVG, so no emoji font is needed.
const ICONS = {
  thumb: "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10a2 2 0 0 0 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
  edit: "M3 17.25V21h3.75L17.81 9.94l-3.75-3.75L3 17.25zM20.71 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z",
  trash: "M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z",
  flag: "M14.4 6 14 4H5v17h2v-7h5.6l.4 2h7V6z",
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
  showChat();
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
    case "message_update": if (d.message.channel_id === state.current) upsert(d.message); break;
    case "message_delete":
      if (d.channel_id === state.current) {
        state.messages = state.messages.filter((m) => m.id !== d.message_id);
        renderMessages();
      }
      break;
    case "message_delete_bulk":
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
      if (d.channel.id === state.current) renderHeader();
      break;
    case "channel_delete":
      state.channels.delete(d.channel_id);
      if (d.channel_id === state.current) selectChannel(sortedChannels()[0]?.id ?? null);
      renderSidebar();
      break;
    case "community_available": addSnapshot(d.snapshot); renderSidebar(); renderModLink(); break;
    case "member_update":
      if (d.member.user.id === state.me?.id) refreshPermissions();
      break;
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
      if (d.lifted) showNotice(`Your timeout in ${where} was lifted; you can post again.`);
      else if (d.sanction.kind === "timeout") {
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
  if (m.channel_id === state.current) {
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
  }
}

function onReaction(d) {
  const key = `${d.message_id}:${d.emoji}`;
  if (d.user_id === state.me?.id) {
    if (d.t === "reaction_add") state.myReactions.add(key); else state.myReactions.delete(key);
  }
  const m = state.messages.find((x) => x.id === d.message_id);
  if (!m) return;
  const reactions = m.reactions.filter((r) => r.emoji !== d.emoji);
  if (d.count > 0) {
    const at = m.reactions.findIndex((r) => r.emoji === d.emoji);
    reactions.splice(at < 0 ? reactions.length : at, 0, { emoji: d.emoji, count: d.count });
  }
  upsert({ ...m, reactions });
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

const channelLabel = (c) => (c.kind === "dm" || c.kind === "group_dm" ? "@" : "#");

let loadGeneration = 0;
async function selectChannel(id) {
  state.current = id;
  state.messages = [];
  state.hasMore = false;
  state.loaded = false;
  store.set("channel", id);
  shell.setCommunity(state.channels.get(id)?.community_id ?? null);
  renderSidebar();
  renderHeader();
  renderMessages();
  renderTyping();
  const input = $("composer-input");
  input.disabled = $("send-button").disabled = !id;
  if (!id) return;
  input.focus();
  const gen = ++loadGeneration;
  try {
    const page = await request("fetch_history", { channel_id: id, limit: PAGE });
    if (gen !== loadGeneration) return;
    const live = state.messages; // messages that arrived while loading
    state.messages = page.messages;
    live.forEach((m) => upsert(m, false));
    state.hasMore = page.has_more;
    state.loaded = true;
    renderMessages({ toBottom: true });
    markReadSoon();
  } catch (err) { if (gen === loadGeneration) showError(err); }
}

async function loadOlder() {
  if (!state.hasMore || state.loadingOlder || !state.messages.length) return;
  state.loadingOlder = true;
  const id = state.current;
  try {
    const page = await request("fetch_history",
      { channel_id: id, before: state.messages[0].seq, limit: PAGE });
    if (id !== state.current) return;
    const known = new Set(state.messages.map((m) => m.id));
    state.messages = [...page.messages.filter((m) => !known.has(m.id)), ...state.messages];
    state.hasMore = page.has_more;
    renderMessages({ keepFromBottom: true });
  } catch (err) { showError(err); } finally { state.loadingOlder = false; }
}

let markTimer = null;
function markReadSoon() {
  clearTimeout(markTimer);
  markTimer = setTimeout(() => {
    const ch = state.channels.get(state.current);
    const last = state.messages.at(-1)?.seq ?? 0;
    const seq = Math.max(last, ch?.last_seq ?? 0);
    const rs = state.readStates.get(state.current);
    if (!ch || document.visibilityState !== "visible" || !seq) return;
    if (rs && rs.last_read_seq >= seq && !rs.unread_count) return;
    state.readStates.set(ch.id, { channel_id: ch.id, last_read_seq: seq, unread_count: 0, mention_count: 0 });
    renderSidebar();
    request("mark_read", { channel_id: ch.id, seq }).then((r) => {
      state.readStates.set(ch.id, r.read_state);
      renderSidebar();
    }).catch(showError);
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

function sendMessage(content, nonce = randomNonce()) {
  const channelId = state.current;
  state.pending.set(nonce, { nonce, channel_id: channelId, content, error: null });
  renderMessages({ toBottom: true });
  request("send_message", { channel_id: channelId, content, nonce }).then((r) => {
    state.pending.delete(nonce);
    onMessageCreate(r.message);
  }).catch((err) => {
    const p = state.pending.get(nonce);
    if (p) p.error = err;
    renderMessages();
    showError(err);
  });
}

function toggleReaction(messageId, emoji) {
  const key = `${messageId}:${emoji}`;
  const mine = state.myReactions.has(key);
  request(mine ? "remove_reaction" : "add_reaction",
    { channel_id: state.current, message_id: messageId, emoji }).then(() => {
    if (mine) state.myReactions.delete(key); else state.myReactions.add(key);
    renderMessages();
  }).catch(showError);
}

function startEdit(li, m) {
  li.classList.add("editing");
  const box = el("textarea", { class: "edit-input", value: m.content, rows: 2,
    ariaLabel: "Edit message", dataTestid: "edit-input" });
  const content = li.querySelector(".content");
  content.replaceWith(box);
  box.focus();
  const stop = () => { li.classList.remove("editing"); box.replaceWith(content); renderMessages(); };
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") stop();
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      const text = box.value.trim();
      if (text && text !== m.content) {
        request("edit_message", { channel_id: m.channel_id, message_id: m.id, content: text })
          .then((r) => upsert(r.message)).catch(showError);
      }
      stop();
    }
  });
}

/** Whether I may delete others' messages in this channel (MANAGE_MESSAGES or staff);
 * the server checks again, this only decides whether to offer the button. */
function canManageMessages(channelId) {
  const cid = state.channels.get(channelId)?.community_id;
  const c = cid ? state.communities.get(cid) : null;
  if (!c) return false;
  return c.permissions ? (c.permissions & ((1 << 10) | (1 << 30))) !== 0 : STAFF_ROLES.has(c.role);
}

function messageNode(m) {
  const own = m.author.id === state.me?.id;
  const manage = !own && canManageMessages(m.channel_id);
  const time = new Date(m.created_at);
  const li = el("li", { class: `message${own ? " own" : ""}`, dataTestid: "message",
    dataKey: `m${m.id}`, dataSeq: m.seq, dataAuthor: m.author.username },
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(m.author)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("span", { class: "author", dataTestid: "message-author", text: nameOf(m.author) }),
    el("time", { dateTime: time.toISOString(), title: time.toLocaleString(),
      text: time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }),
    m.edited_at ? el("span", { class: "edited muted", text: "(edited)" }) : null),
  el("div", { class: "content", dataTestid: "message-content", text: m.content }),
  el("div", { class: "reactions" }, ...m.reactions.map((r) => {
    const mine = state.myReactions.has(`${m.id}:${r.emoji}`);
    return el("button", { type: "button", class: `reaction${mine ? " mine" : ""}`,
      dataTestid: "reaction", dataAction: "react", dataEmoji: r.emoji,
      ariaPressed: String(mine), ariaLabel: `${r.emoji} ${r.count}` },
    `${r.emoji} `, el("span", { class: "count", dataTestid: "reaction-count", text: String(r.count) }));
  })),
  el("div", { class: "actions" },
    el("button", { type: "button", class: "icon", dataAction: "react", dataEmoji: QUICK_EMOJI,
      dataTestid: "react-button", ariaLabel: "React with thumbs up", title: "React" }, icon("thumb")),
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
  return li;
}

function pendingNode(p) {
  const li = el("li", { class: `message own pending${p.error ? " failed" : ""}`,
    dataTestid: "message", dataKey: `p${p.nonce}`, dataPending: "true" },
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(state.me)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("span", { class: "author", text: nameOf(state.me) }),
    el("span", { class: "muted", dataTestid: "message-status",
      text: p.error ? `not sent — ${friendlyError(p.error)}` : "sending…" }),
    p.error ? el("button", { type: "button", class: "link", dataAction: "retry",
      dataNonce: p.nonce, dataTestid: "retry-button", text: "Retry" }) : null,
    p.error ? el("button", { type: "button", class: "link", dataAction: "discard",
      dataNonce: p.nonce, dataTestid: "discard-button", text: "Discard" }) : null),
  el("div", { class: "content", dataTestid: "message-content", text: p.content }));
  li.style.setProperty("--hue", hue(state.me?.id ?? 0));
  return li;
}

function renderMessages({ toBottom = false, keepFromBottom = false } = {}) {
  const list = $("messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  const atBottom = fromBottom - list.clientHeight < 60;
  const existing = new Map([...list.children].map((li) => [li.dataset.key, li]));
  const wanted = [];
  let prev = null;
  for (const m of state.messages) {
    let li = existing.get(`m${m.id}`);
    if (!li || (li.message !== m && !li.classList.contains("editing"))) li = messageNode(m);
    li.classList.toggle("continued", !!prev && prev.author.id === m.author.id
      && m.created_at - prev.created_at < 5 * 60000);
    prev = m;
    wanted.push(li);
  }
  for (const p of state.pending.values()) {
    if (p.channel_id === state.current) wanted.push(pendingNode(p));
  }
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
  if (!state.messages.length && !wanted.length && state.current) {
    list.append(el("li", { class: "empty muted", dataKey: "empty", 
      text: state.loaded ? "No messages yet — say hello!" : "Loading…" }));
  }
  if (keepFromBottom) list.scrollTop = list.scrollHeight - fromBottom;
  else if (toBottom || atBottom) list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------------------- rendering

function renderSidebar() {
  const root = $("community-list");
  const sections = [...state.communities.values()]
    .sort((a, b) => a.community.id - b.community.id)
    .map(({ community }) => [community.name, community.id, sortedChannels(community.id)]);
  const dms = sortedChannels(null);
  if (dms.length) sections.push(["Direct messages", null, dms]);
  root.replaceChildren(...sections.map(([name, cid, channels]) => el("section",
    { class: "community", dataTestid: "community", dataCommunityId: cid ?? "" },
    el("h3", { text: name }),
    el("ul", {}, ...channels.map((c) => {
      const rs = state.readStates.get(c.id);
      const unread = c.id !== state.current && rs?.unread_count > 0;
      const active = c.id === state.current;
      return el("li", {}, el("button", { type: "button",
        class: `channel-link${active ? " active" : ""}${unread ? " unread" : ""}`,
        dataTestid: "channel-link", dataChannelId: c.id, dataChannelName: c.name,
        ariaCurrent: active ? "page" : null },
      el("span", { class: "hash", ariaHidden: "true", text: channelLabel(c) }),
      el("span", { class: "name", text: c.name || "direct message" }),
      unread ? el("span", { class: `badge${rs.mention_count ? " mention" : ""}`,
        dataTestid: "unread-badge", ariaLabel: `${rs.unread_count} unread`,
        text: String(rs.mention_count || rs.unread_count) }) : null));
    })))));
}

function renderHeader() {
  const ch = state.channels.get(state.current);
  $("channel-title").textContent = ch ? `${channelLabel(ch)} ${ch.name}` : "Hearth";
  $("channel-topic").textContent = ch?.topic ?? "";
  $("composer-input").placeholder = ch ? `Message ${channelLabel(ch)}${ch.name}` : "Message";
  const role = ch?.community_id ? state.communities.get(ch.community_id)?.role : null;
  $("invite-button").hidden = !role || role === "member";
  $("invite-output").textContent = "";
  renderModLink();
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
  const btn = ev.target.closest("[data-channel-id]");
  if (btn) selectChannel(Number(btn.dataset.channelId));
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

$("messages").addEventListener("scroll", (ev) => {
  if (ev.target.scrollTop < 80) loadOlder();
});

$("messages").addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const { action } = btn.dataset;
  if (action === "retry" || action === "discard") {
    const p = state.pending.get(btn.dataset.nonce);
    state.pending.delete(btn.dataset.nonce);
    if (p && action === "retry") sendMessage(p.content, p.nonce); else renderMessages();
    return;
  }
  const li = btn.closest("li.message");
  const m = li?.message;
  if (!m) return;
  if (action === "react") toggleReaction(m.id, btn.dataset.emoji);
  else if (action === "edit") startEdit(li, m);
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
});

const composer = $("composer-input");
composer.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
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
  const content = composer.value.trim();
  if (!content || !state.current) return;
  composer.value = "";
  composer.style.height = "auto";
  state.lastTypingSent = 0;
  sendMessage(content);
});

// Debug/test hook: drop the socket as a network failure would (the client resumes).
window.hearth = { state, gw, accessToken, dropConnection: () => dropSocket(4000, "simulated drop") };

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
