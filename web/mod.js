// Hearth moderator console: the live moderator feed, the review queue, one-click actions
// on an item or a member, channel and community tools, and the audit log. Plain ES
// module, no build step; the connection layer is gateway.js (shared with the chat page),
// and the console runs on the browser's one sign-in (session.js), so a new tab opens
// it without signing in again. The header is shell.js; errors are worded by errors.js.
//
// The page never decides what a moderator may do: it offers the tools, sends the ops
// (protocol/frames.py, "Moderation (issue 5)") and shows the server's refusal when there
// is one. Every action asks for a reason, which lands in the audit log.

import {
  HearthError, api, authHeaders, API, dropSocket, el, gw, hooks, nameOf, orphanErrors, request,
  resumeStoredSession, store,
} from "./gateway.js";
import { errorCode, friendlyError } from "./errors.js";
import { mountShell } from "./shell.js";

const $ = (id) => document.getElementById(id);
const FEED_MAX = 200; // feed entries kept on the page (oldest dropped)
const MEMBER_PAGES = 10; // fetch_members pages of 100 loaded for the member tools
const AUDIT_PAGE = 50;
const QUEUE_PAGE = 50;

// Permission bits (rooms/realtime/permissions.py Permission).
const P = {
  MANAGE_MESSAGES: 1 << 10, TIMEOUT_MEMBERS: 1 << 11, KICK_MEMBERS: 1 << 12,
  BAN_MEMBERS: 1 << 13, MANAGE_CHANNELS: 1 << 14, VIEW_AUDIT_LOG: 1 << 16, MODERATE: 1 << 17,
  MANAGE_COMMUNITY: 1 << 19, ADMINISTRATOR: 1 << 30,
};
const MOD_BITS = P.MANAGE_MESSAGES | P.TIMEOUT_MEMBERS | P.KICK_MEMBERS | P.BAN_MEMBERS
  | P.VIEW_AUDIT_LOG | P.MODERATE | P.ADMINISTRATOR;
const STAFF_ROLES = new Set(["moderator", "admin", "owner"]);

const TIMEOUTS = [["60", "1 minute"], ["300", "5 minutes"], ["600", "10 minutes"],
  ["3600", "1 hour"], ["86400", "1 day"], ["604800", "1 week"]];
const BANS = [["", "Permanent"], ["3600", "1 hour"], ["86400", "1 day"],
  ["604800", "7 days"], ["2419200", "28 days"]];

// ------------------------------------------------------------------------------ state

const state = {
  me: null,
  communities: new Map(), // id -> {community, role, permissions, channels: Map, lockdown}
  current: null, // selected community id
  subscribed: null, // community whose feed this session receives
  users: new Map(), // user id -> User (members of the current community)
  roles: new Map(), // user id -> fixed role in the current community (members only)
  rolesVersion: 0, // bumps when a role in `roles` changes (cards show rank-based buttons)
  queue: new Map(), // item id -> ReviewItem (the listed page(s))
  queueHasMore: false,
  deleted: new Set(), // message ids known deleted
  feed: [], // newest first: {key, kind, ...}
  appeals: new Map(), // appeal id -> Appeal (open ones)
  audit: [], // newest first
  auditHasMore: false,
  generation: 0, // bumps on community switch: late replies for the old one are dropped
};

// ------------------------------------------------------------------------- UI helpers

let errorTimer = null;
function showError(err) {
  $("error-text").textContent = describe(err);
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

function describe(err) {
  return friendlyError(err);
}

function setStatus(text, kind = "") {
  const node = $("connection-status");
  node.textContent = text;
  node.dataset.state = kind;
  if (kind !== "connected" && state.subscribed) setFeedState("paused (reconnecting)");
}

function setFeedState(text, live = false) {
  $("feed-state").textContent = text;
  if (live) $("feed-state").dataset.state = "live";
  else delete $("feed-state").dataset.state;
}

function userName(id) {
  if (id == null) return "automod";
  const u = state.users.get(id);
  return u ? nameOf(u) : `user #${id}`;
}

const USER_TARGETS = new Set(["user", "member"]); // audit target types naming a user
const whom = (id) => (id === state.me?.id ? "you" : userName(id));

function channelName(id) {
  const ch = state.communities.get(state.current)?.channels.get(id);
  return ch ? `#${ch.name}` : `channel #${id}`;
}

function fmtTime(ms) {
  const t = new Date(ms);
  return el("time", { dateTime: t.toISOString(), title: t.toLocaleString(),
    text: t.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) });
}

function fmtDuration(s) {
  if (s == null) return "permanently";
  const units = [[604800, "week"], [86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  for (const [n, name] of units) {
    if (s % n === 0) { const k = s / n; return `${k} ${name}${k === 1 ? "" : "s"}`; }
  }
  return `${s} s`;
}

function perms() {
  return state.communities.get(state.current)?.permissions ?? 0;
}

/** Whether the member's bits (when the server sent them) include ``bit``. Unknown bits
 * (0: an older server) offer the tool and let the server refuse. */
function may(bit) {
  const p = perms();
  if (!p) return true;
  return (p & P.ADMINISTRATOR) !== 0 || (p & bit) !== 0;
}

// --------------------------------------------------------------------------- gateway

function canModerate(snap) {
  return snap.permissions ? (snap.permissions & MOD_BITS) !== 0 : STAFF_ROLES.has(snap.role);
}

function addSnapshot(snap) {
  if (!canModerate(snap)) { state.communities.delete(snap.community.id); return; }
  const old = state.communities.get(snap.community.id);
  state.communities.set(snap.community.id, {
    community: snap.community, role: snap.role, permissions: snap.permissions ?? 0,
    channels: new Map(snap.channels.filter((c) => c.kind !== "category")
      .map((c) => [c.id, c])),
    lockdown: snap.lockdown ?? snap.moderation?.lockdown ?? old?.lockdown ?? null,
  });
}

function onReady(f) {
  state.me = f.user;
  $("me-name").textContent = nameOf(f.user);
  state.communities.clear();
  f.communities.forEach(addSnapshot);
  state.subscribed = null;
  renderCommunitySelect();
  const wanted = Number(new URLSearchParams(location.search).get("community"))
    || Number(store.get("mod.community"));
  const pick = [state.current, wanted].find((id) => id && state.communities.has(id))
    ?? [...state.communities.keys()][0] ?? null;
  // A fresh identify (the old session was lost) in the same community keeps what the
  // feed showed; everything else is read again.
  selectCommunity(pick, { keepFeed: pick === state.current });
}

function onResumed() {
  // A resume on another node (the first one died) does not carry the feed over, so
  // subscribe again (idempotent); missed events were replayed, but the queue is cheap
  // to re-read and may have been paged.
  const cid = state.current;
  if (!cid) return;
  request("subscribe_mod_feed", { community_id: cid }).then(() => {
    if (state.current !== cid) return;
    state.subscribed = cid;
    setFeedState("live", true);
  }).catch((err) => {
    if (state.current !== cid) return;
    state.subscribed = null;
    setFeedState(`not live — ${describe(err)}`);
    showError(err);
  });
  loadQueue();
}

function onEvent(d) {
  const cid = state.current;
  switch (d.t) {
    case "review_item": if (d.item.community_id === cid) onItem(d.item); break;
    case "mod_action": if (d.entry.community_id === cid) onModAction(d.entry); break;
    case "automod_alert":
      if (d.community_id === cid) pushFeed({ key: `a${++feedSeq}`, kind: "automod", d });
      break;
    case "raid_signal":
      if (d.community_id === cid) pushFeed({ key: `r${++feedSeq}`, kind: "raid", d });
      break;
    case "appeal_update":
      if (d.appeal.community_id === cid) {
        onAppeal(d.appeal);
        pushFeed({ key: `p${d.appeal.id}:${d.appeal.status}`, kind: "appeal", d });
      }
      break;
    case "message_delete": markDeleted([d.message_id]); break;
    case "message_delete_bulk": markDeleted(d.message_ids); break;
    case "channel_create":
    case "channel_update": {
      const c = state.communities.get(d.channel.community_id);
      if (c && d.channel.kind !== "category") c.channels.set(d.channel.id, d.channel);
      if (d.channel.community_id === cid) renderChannelTools();
      break;
    }
    case "channel_delete": {
      const c = state.communities.get(d.community_id);
      c?.channels.delete(d.channel_id);
      if (d.community_id === cid) renderChannelTools();
      break;
    }
    case "community_moderation_update": {
      const c = state.communities.get(d.community_id);
      if (c) c.lockdown = d.lockdown;
      if (d.community_id === cid) renderLockdown();
      break;
    }
    case "community_available":
      addSnapshot(d.snapshot);
      renderCommunitySelect();
      if (!state.current) selectCommunity(d.snapshot.community.id);
      break;
    case "community_unavailable":
      state.communities.delete(d.community_id);
      renderCommunitySelect();
      if (d.community_id === cid) selectCommunity([...state.communities.keys()][0] ?? null);
      break;
    case "member_join":
      if (d.member.community_id === cid) { addMember(d.member); renderMembers(); }
      break;
    case "member_leave":
      // The name stays known (for the feed and the audit log); the row goes.
      if (d.community_id === cid && state.roles.delete(d.user_id)) {
        state.rolesVersion++;
        renderMembers();
      }
      break;
    case "member_update":
      if (d.member.community_id === cid) { addMember(d.member); renderMembers(); }
      if (d.member.user.id === state.me?.id) refreshPermissions();
      break;
    case "permissions_update":
      if (d.user_id == null || d.user_id === state.me?.id) refreshPermissions();
      break;
    default: break;
  }
}

// ---------------------------------------------------------------------- communities

let refreshingPermissions = null;
/** My role or permission bits changed somewhere: re-read my communities (their
 * snapshots carry the re-resolved bits), drop the ones I no longer moderate, and
 * re-render the tools so buttons match what the server will allow. */
function refreshPermissions() {
  refreshingPermissions ??= (async () => {
    try {
      const { communities } = await api("GET", "/communities");
      const fresh = new Map(communities.map((snap) => [snap.community.id, snap]));
      for (const [id, c] of [...state.communities]) {
        const snap = fresh.get(id);
        if (!snap || !canModerate(snap)) { state.communities.delete(id); continue; }
        c.role = snap.role;
        c.permissions = snap.permissions ?? 0;
      }
      for (const snap of communities) {
        if (!state.communities.has(snap.community.id) && canModerate(snap)) addSnapshot(snap);
      }
      renderCommunitySelect();
      if (!state.communities.has(state.current)) {
        selectCommunity([...state.communities.keys()][0] ?? null);
      } else {
        renderTools();
        renderQueue();
        renderFeed();
        renderAudit();
        renderAppeals();
      }
    } catch (err) { showError(err); }
  })().finally(() => { refreshingPermissions = null; });
  return refreshingPermissions;
}

function renderCommunitySelect() {
  const select = $("community-select");
  select.replaceChildren(...[...state.communities.values()]
    .sort((a, b) => a.community.name.localeCompare(b.community.name))
    .map((c) => el("option", { value: String(c.community.id), text: c.community.name })));
  select.disabled = state.communities.size < 2;
  if (state.current) select.value = String(state.current);
}

async function selectCommunity(id, { keepFeed = false } = {}) {
  const gen = ++state.generation;
  const previous = state.subscribed;
  state.current = id;
  state.queue.clear();
  if (!keepFeed) {
    state.deleted.clear();
    state.feed = [];
  }
  state.audit = [];
  state.appeals.clear();
  state.users.clear();
  state.roles.clear();
  $("signed-out").hidden = true;
  $("no-communities").hidden = !!id;
  $("console").hidden = !id;
  renderFeed();
  renderQueue();
  renderAudit();
  renderAppeals();
  if (!id) return;
  store.set("mod.community", id);
  shell.setCommunity(id);
  $("community-select").value = String(id);
  const url = new URL(location.href);
  url.searchParams.set("community", id);
  history.replaceState(null, "", url);
  renderTools();
  if (previous && previous !== id) {
    state.subscribed = null;
    request("unsubscribe_mod_feed", { community_id: previous }).catch(() => {});
  }
  setFeedState("subscribing…");
  try {
    await request("subscribe_mod_feed", { community_id: id });
    if (gen !== state.generation) return;
    state.subscribed = id;
    setFeedState("live", true);
  } catch (err) {
    if (gen !== state.generation) return;
    setFeedState(`not live — ${describe(err)}`);
    showError(err);
  }
  await loadMembers(gen);
  if (gen !== state.generation) return;
  renderFeed(); // names are known now
  await Promise.all([loadQueue(), loadAudit(), loadAppeals()]);
}

// ------------------------------------------------------------------------- members

function addMember(member) {
  state.users.set(member.user.id, member.user);
  if (state.roles.get(member.user.id) !== member.role) state.rolesVersion++;
  state.roles.set(member.user.id, member.role);
}

async function loadMembers(gen) {
  let after = 0;
  try {
    for (let i = 0; i < MEMBER_PAGES; i++) {
      const page = await request("fetch_members", { community_id: state.current, after, limit: 100 });
      if (gen !== state.generation) return;
      page.members.forEach(addMember);
      if (!page.has_more || !page.members.length) break;
      after = page.members.at(-1).user.id;
    }
  } catch (err) { showError(err); }
  renderMembers();
  renderActorFilter();
}

function renderMembers() {
  const filter = $("member-filter").value.trim().toLowerCase();
  const rows = [...state.users.values()]
    .filter((u) => u.id !== state.me?.id && state.roles.has(u.id))
    .filter((u) => !filter || u.username.toLowerCase().includes(filter)
      || (u.display_name ?? "").toLowerCase().includes(filter))
    .sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
    .slice(0, 50);
  $("member-list").replaceChildren(...rows.map((u) => el("li", {
    class: "member-row", dataTestid: "member-row", dataUserId: u.id, dataUsername: u.username },
  el("span", { class: "member-name", text: nameOf(u) }),
  el("span", { class: "muted small-text", text: `@${u.username} · ${state.roles.get(u.id) ?? "member"}` }),
  memberActions(u.id, null))));
}

function renderActorFilter() {
  const fill = (select, users) => {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", text: "Anyone" }),
      ...users.sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
        .map((u) => el("option", { value: String(u.id), text: `${nameOf(u)} (@${u.username})` })));
    select.value = keep;
  };
  const everyone = [...state.users.values()];
  fill($("audit-actor"), everyone.filter((u) => STAFF_ROLES.has(state.roles.get(u.id))));
  fill($("audit-target"), everyone);
}

const RANK = { member: 0, moderator: 1, admin: 2, owner: 3 };

/** Why the server would certainly refuse to sanction ``userId`` (null: it may allow it).
 * Fixed roles only: with equal fixed roles, custom role positions decide, server-side. */
function outranked(userId) {
  const mine = RANK[state.communities.get(state.current)?.role] ?? 0;
  const theirs = RANK[state.roles.get(userId)] ?? 0;
  if (state.roles.get(userId) === "owner") return "nobody sanctions the owner";
  return theirs > mine ? `${userName(userId)} is ${state.roles.get(userId)}, above your role` : null;
}

/** Warn / timeout / kick / ban buttons for one member (optionally acting on an item). */
function memberActions(userId, item) {
  const who = userName(userId);
  const above = outranked(userId);
  const button = (action, label, bit) => el("button", {
    type: "button", class: `small ${["ban", "kick"].includes(action) ? "danger" : "secondary"}`,
    dataAction: action, dataUserId: userId, dataItemId: item?.id ?? null,
    dataTestid: `action-${action}`, disabled: !may(bit) || (above && action !== "purge-user"),
    title: above && action !== "purge-user" ? above : null,
    ariaLabel: `${label} ${who}`, text: label });
  return el("div", { class: "action-row", role: "group", ariaLabel: `Actions on ${who}` },
    button("warn", "Warn", P.MODERATE),
    button("timeout", "Timeout", P.TIMEOUT_MEMBERS),
    button("kick", "Kick", P.KICK_MEMBERS),
    button("ban", "Ban", P.BAN_MEMBERS),
    button("purge-user", "Delete messages", P.MANAGE_MESSAGES));
}

// ------------------------------------------------------------------------------ queue

async function loadQueue({ older = false } = {}) {
  const gen = state.generation;
  const status = $("queue-filter").value || null;
  const fields = { community_id: state.current, limit: QUEUE_PAGE };
  if (status) fields.status = status;
  if (older) {
    const ids = [...state.queue.keys()];
    if (ids.length) fields.before_id = Math.min(...ids);
  }
  try {
    const page = await request("fetch_review_queue", fields);
    if (gen !== state.generation) return;
    if (!older) state.queue.clear();
    for (const item of page.items) state.queue.set(item.id, item);
    state.queueHasMore = page.has_more;
    renderQueue();
  } catch (err) { if (gen === state.generation) showError(err); }
}

function queueWants(item) {
  const status = $("queue-filter").value;
  return status ? item.status === status : item.status !== "resolved";
}

function onItem(item) {
  const known = state.queue.get(item.id) ?? state.feed.find((f) => f.item?.id === item.id)?.item;
  // The queue shows the new state at once; a resolved item stays visible (marked
  // resolved) until the list is refreshed, so nobody acts on it twice.
  if (state.queue.has(item.id) || queueWants(item)) state.queue.set(item.id, item);
  renderQueue();
  const what = !known ? (item.sources.includes("report") ? "New report" : "Flagged")
    : item.status === "resolved" && known.status !== "resolved" ? `Resolved by ${whom(item.resolved_by)}`
    : item.status === "claimed" && known.status !== "claimed" ? `Claimed by ${whom(item.claimed_by)}`
    : item.report_count > known.report_count ? "Reported again"
    : item.flag_count > known.flag_count ? "Flagged again" : "Updated";
  // One feed card per item, updated in place and moved to the top.
  state.feed = state.feed.filter((f) => f.item?.id !== item.id);
  pushFeed({ key: `i${item.id}`, kind: "item", item, what });
}

function markDeleted(ids) {
  let hit = false;
  for (const id of ids) {
    state.deleted.add(id);
    hit ||= [...state.queue.values()].some((i) => i.message_id === id);
  }
  if (hit) { renderQueue(); renderFeed(); }
}

function itemNode(item, { what = null, where = "queue" } = {}) {
  const deleted = item.message_id != null && state.deleted.has(item.message_id);
  const resolved = item.status === "resolved";
  const who = item.target_user_id;
  const li = el("li", { class: `item card status-${item.status}`, dataTestid: "review-item",
    dataItemId: item.id, dataStatus: item.status, dataMessageId: item.message_id ?? "" },
  el("div", { class: "item-head" },
    el("span", { class: `pill status-${item.status}`, dataTestid: "item-status", text: item.status }),
    what ? el("strong", { class: "what", text: what }) : null,
    el("span", { class: "muted", text: item.kind === "message"
      ? `Message by ${userName(who)} in ${channelName(item.channel_id)}` : `User ${userName(who)}` }),
    el("span", { class: "spacer" }),
    fmtTime(item.updated_at || item.created_at)),
  item.kind === "message" ? el("blockquote", { class: `item-content${deleted ? " deleted" : ""}`,
    dataTestid: "item-content", text: item.content || "(no text)" }) : null,
  deleted ? el("p", { class: "muted small-text", dataTestid: "item-deleted", text: "Message deleted." }) : null,
  el("p", { class: "item-reason" },
    el("span", { class: "muted", text: `${item.report_count} report${item.report_count === 1 ? "" : "s"}`
      + `${item.flag_count ? `, ${item.flag_count} automod flag${item.flag_count === 1 ? "" : "s"}` : ""}`
      + ` (${item.sources.join(", ") || "report"}): ` }),
    el("q", { text: item.first_reason })),
  item.claimed_by && !resolved ? el("p", { class: "small-text", dataTestid: "item-claimed",
    text: `Claimed by ${whom(item.claimed_by)}` }) : null,
  resolved ? el("p", { class: "resolution", dataTestid: "item-resolution",
    text: `Resolved by ${whom(item.resolved_by)}: `
      + `${item.decision ?? "resolved"}${item.decision_reason ? ` — ${item.decision_reason}` : ""}` }) : null,
  resolved ? null : el("div", { class: "item-actions" },
    item.status === "open" ? el("button", { type: "button", class: "secondary small",
      dataAction: "claim", dataItemId: item.id, dataTestid: "action-claim",
      ariaLabel: `Claim item ${item.id}`, text: "Claim" }) : null,
    item.kind === "message" && !deleted ? el("button", { type: "button", class: "small danger",
      dataAction: "delete", dataItemId: item.id, dataTestid: "action-delete",
      disabled: !may(P.MANAGE_MESSAGES), ariaLabel: `Delete the message of item ${item.id}`,
      text: "Delete message" }) : null,
    who != null && who !== state.me?.id ? memberActions(who, item) : null,
    el("button", { type: "button", class: "secondary small", dataAction: "resolve",
      dataItemId: item.id, dataTestid: "action-resolve", ariaLabel: `Resolve item ${item.id}`,
      text: "Resolve…" })));
  li.dataset.where = where;
  return li;
}

/** Render `entries` into `list`, reusing the node of every entry whose signature did not
 * change: in a busy community the lists change many times a second, and rebuilding
 * them would steal the moderator's focus and make screen readers re-read the feed. */
function reconcile(list, entries, keyOf, sigOf, build) {
  const active = document.activeElement;
  const activeKey = list.contains(active) ? active.closest("[data-key]")?.dataset.key : null;
  const activeAction = active?.dataset?.action ?? null;
  const old = new Map([...list.children].map((n) => [n.dataset.key, n]));
  const wanted = entries.map((e) => {
    const key = keyOf(e);
    const sig = sigOf(e);
    let node = old.get(key);
    if (!node || node.sig !== sig) {
      node = build(e);
      node.dataset.key = key;
      node.sig = sig;
    }
    return node;
  });
  wanted.forEach((n, i) => { if (list.children[i] !== n) list.insertBefore(n, list.children[i] ?? null); });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
  if (activeKey && !list.contains(active)) {
    const node = wanted.find((n) => n.dataset.key === activeKey);
    (node?.querySelector(`[data-action="${activeAction}"]`) ?? node)?.focus?.();
  }
}

/** What a rendered card depends on besides its own record. */
const context = () => [state.users.size, state.rolesVersion, perms(), state.me?.id,
  state.communities.get(state.current)?.role];

function itemSig(item) {
  return JSON.stringify([item, item.message_id != null && state.deleted.has(item.message_id), context()]);
}

function renderQueue() {
  const items = [...state.queue.values()].sort((a, b) => b.id - a.id);
  reconcile($("queue-list"), items, (i) => `q${i.id}`, itemSig, (i) => itemNode(i));
  $("queue-empty").hidden = items.length > 0 || !state.current;
  $("queue-more").hidden = !state.queueHasMore;
}

// ------------------------------------------------------------------------------- feed

function pushFeed(entry) {
  state.feed.unshift(entry);
  if (state.feed.length > FEED_MAX) state.feed.length = FEED_MAX;
  renderFeed();
}

function onModAction(entry) {
  pushFeed({ key: `e${entry.id}`, kind: "action", entry });
  // The first page of an unfiltered audit log grows live.
  if (!auditFilters().filtered && !state.audit.some((e) => e.id === entry.id)) {
    state.audit.unshift(entry);
    renderAudit();
  }
}

function describeAction(e) {
  const target = USER_TARGETS.has(e.target_type) ? userName(e.target_id)
    : e.target_type === "channel" ? channelName(e.target_id)
    : e.target_type === "message" ? `message #${e.target_id}`
    : `${e.target_type}${e.target_id != null ? ` #${e.target_id}` : ""}`;
  return `${userName(e.actor_id)} · ${e.action} · ${target}`;
}

function feedNode(f) {
  if (f.kind === "item") {
    const live = state.queue.get(f.item.id) ?? f.item;
    const li = itemNode(live, { what: f.what, where: "feed" });
    li.classList.add("feed-entry");
    li.dataset.kind = "item";
    return li;
  }
  let text;
  let cls = "";
  if (f.kind === "action") {
    const e = f.entry;
    text = `${describeAction(e)}${e.reason ? ` — “${e.reason}”` : ""}`;
  } else if (f.kind === "automod") {
    const d = f.d;
    text = `Automod “${d.rule}”: ${d.summary}${d.user_id != null ? ` (${userName(d.user_id)})` : ""}`
      + `${d.actions.length ? ` [${d.actions.join(", ")}]` : ""}`;
    cls = "warn";
  } else if (f.kind === "raid") {
    const d = f.d;
    text = `Raid signal: ${d.count} ${d.kind} in ${d.window_s} s (threshold ${d.threshold})`;
    cls = "danger";
  } else if (f.kind === "appeal") {
    const a = f.d.appeal;
    text = `Appeal by ${userName(a.user_id)} against ${a.action}: ${a.status}`
      + `${a.status === "open" ? ` — “${a.text}”` : ""}`;
  }
  const li = el("li", { class: `feed-entry card ${cls}`, dataTestid: "feed-entry", dataKind: f.kind },
    el("span", { class: `pill kind-${f.kind}`, text: f.kind === "action" ? "action" : f.kind }),
    el("span", { class: "feed-text", text }));
  if (f.kind === "automod" && f.d.user_id != null && f.d.user_id !== state.me?.id) {
    li.append(memberActions(f.d.user_id, null));
  }
  if (f.kind === "appeal" && state.appeals.has(f.d.appeal.id)) li.append(appealActions(f.d.appeal));
  if (f.kind === "raid" && !state.communities.get(state.current)?.lockdown) {
    li.append(el("button", { type: "button", class: "small danger", dataAction: "lockdown",
      dataTestid: "action-lockdown", text: "Start lockdown" }));
  }
  return li;
}

function feedSig(f) {
  if (f.kind === "item") return `${f.what}|${itemSig(state.queue.get(f.item.id) ?? f.item)}`;
  return JSON.stringify([context(), f.kind === "appeal" && state.appeals.has(f.d.appeal.id),
    f.kind === "raid" && !!state.communities.get(state.current)?.lockdown]);
}

function renderFeed() {
  reconcile($("feed"), state.feed, (f) => f.key, feedSig, feedNode);
}

// ------------------------------------------------------------------------------ tools

function renderTools() {
  renderLockdown();
  renderChannelTools();
  renderMembers();
}

function renderLockdown() {
  const c = state.communities.get(state.current);
  const on = c?.lockdown;
  $("lockdown-state").textContent = on == null ? "unknown" : on ? "on" : "off";
  $("lockdown-badge").hidden = !on;
  $("lockdown-toggle").textContent = on ? "Lift lockdown" : "Start lockdown";
  $("lockdown-toggle").dataset.enabled = on ? "true" : "false";
  $("lockdown-toggle").disabled = !(may(P.MODERATE) || may(P.MANAGE_COMMUNITY));
}

function textChannels() {
  const c = state.communities.get(state.current);
  return c ? [...c.channels.values()].filter((ch) => ch.kind === "text" || ch.kind === "announcement"
    || ch.kind === "thread").sort((a, b) => (a.position ?? 0) - (b.position ?? 0) || a.id - b.id) : [];
}

function renderChannelTools() {
  const select = $("channel-select");
  const keep = Number(select.value);
  const channels = textChannels();
  select.replaceChildren(...channels.map((ch) => el("option", { value: String(ch.id), text: `#${ch.name}` })));
  if (channels.some((ch) => ch.id === keep)) select.value = String(keep);
  const ch = channels.find((x) => x.id === Number(select.value));
  $("channel-state").textContent = ch
    ? `${ch.locked ? "Locked" : "Open"} · slow mode ${ch.slowmode_s ? fmtDuration(ch.slowmode_s) : "off"}` : "";
  if (ch) {
    const opt = [...$("slowmode-select").options].find((o) => Number(o.value) === (ch.slowmode_s ?? 0));
    if (opt) $("slowmode-select").value = opt.value;
  }
  $("lock-toggle").textContent = ch?.locked ? "Unlock channel" : "Lock channel";
  $("lock-toggle").disabled = $("slowmode-apply").disabled = !ch || !may(P.MODERATE);
  $("purge-apply").disabled = !ch || !may(P.MANAGE_MESSAGES);
}

// ---------------------------------------------------------------------------- appeals

async function loadAppeals() {
  const gen = state.generation;
  try {
    const page = await request("fetch_appeals", { community_id: state.current, status: "open", limit: 50 });
    if (gen !== state.generation) return;
    state.appeals = new Map(page.appeals.map((a) => [a.id, a]));
    renderAppeals();
  } catch (err) {
    if (gen !== state.generation) return;
    if (err.code === "forbidden") renderAppeals("You cannot decide appeals here.");
    else showError(err);
  }
}

function onAppeal(appeal) {
  if (appeal.status === "open") state.appeals.set(appeal.id, appeal);
  else state.appeals.delete(appeal.id);
  renderAppeals();
  renderFeed(); // a decided appeal loses its buttons in the feed too
}

function appealActions(a) {
  const bit = a.action === "member.ban" ? P.BAN_MEMBERS : P.TIMEOUT_MEMBERS;
  return el("div", { class: "action-row", role: "group", ariaLabel: `Decide the appeal of ${userName(a.user_id)}` },
    el("button", { type: "button", class: "small", dataAction: "appeal-accept", dataAppealId: a.id,
      dataTestid: "action-appeal-accept", disabled: !may(bit), text: "Accept (lift)" }),
    el("button", { type: "button", class: "secondary small", dataAction: "appeal-reject",
      dataAppealId: a.id, dataTestid: "action-appeal-reject", disabled: !may(bit), text: "Reject" }));
}

function renderAppeals(note = null) {
  const appeals = [...state.appeals.values()].sort((a, b) => b.id - a.id);
  $("appeal-list").replaceChildren(...appeals.map((a) => el("li", {
    class: "member-row", dataTestid: "appeal", dataAppealId: a.id },
  el("span", { class: "member-name", text: `${userName(a.user_id)} · ${a.action}` }),
  el("q", { class: "small-text", text: a.text }),
  appealActions(a))));
  $("appeals-empty").hidden = appeals.length > 0;
  $("appeals-empty").textContent = note ?? "No open appeals.";
}

// -------------------------------------------------------------------------- audit log

function auditFilters() {
  const fields = {};
  const action = $("audit-action").value;
  const actor = $("audit-actor").value;
  const target = $("audit-target").value;
  const since = $("audit-since").value;
  const until = $("audit-until").value;
  if (action) fields.action = action;
  if (actor) fields.actor_id = Number(actor);
  if (target) { fields.target_id = Number(target); fields.target_type = "user"; }
  if (since) fields.since = new Date(`${since}T00:00:00`).getTime();
  if (until) fields.until = new Date(`${until}T00:00:00`).getTime() + 86400000; // inclusive day
  return { fields, filtered: Object.keys(fields).length > 0 };
}

async function loadAudit({ older = false } = {}) {
  const gen = state.generation;
  const fields = { community_id: state.current, limit: AUDIT_PAGE, ...auditFilters().fields };
  if (older && state.audit.length) fields.before_id = state.audit.at(-1).id;
  try {
    const page = await request("fetch_audit_log", fields);
    if (gen !== state.generation) return;
    state.audit = older ? [...state.audit, ...page.entries] : page.entries;
    state.auditHasMore = page.has_more;
    renderAudit();
  } catch (err) {
    if (gen !== state.generation) return;
    if (err.code === "forbidden") {
      state.audit = [];
      renderAudit("You cannot view this community's audit log.");
    } else showError(err);
  }
}

function changeText(e) {
  const keys = new Set([...Object.keys(e.before ?? {}), ...Object.keys(e.after ?? {})]);
  return [...keys].map((k) => `${k}: ${JSON.stringify(e.before?.[k] ?? null)} → ${JSON.stringify(e.after?.[k] ?? null)}`)
    .join("; ");
}

function renderAudit(note = null) {
  reconcile($("audit-rows"), state.audit, (e) => `e${e.id}`, () => JSON.stringify(context()),
    (e) => el("tr", {
      dataTestid: "audit-row", dataAuditAction: e.action, dataAuditId: e.id },
    el("td", {}, fmtTime(e.created_at)),
    el("td", { text: userName(e.actor_id) }),
    el("td", {}, el("code", { text: e.action })),
    el("td", { text: USER_TARGETS.has(e.target_type) ? userName(e.target_id)
      : e.target_type === "channel" ? channelName(e.target_id)
      : `${e.target_type}${e.target_id != null ? ` #${e.target_id}` : ""}` }),
    el("td", { class: "reason", text: e.reason ?? "" }),
    el("td", { class: "change muted", text: changeText(e) }),
    el("td", {}, e.action === "member.ban" ? el("button", { type: "button", class: "secondary small",
      dataAction: "unban", dataUserId: e.target_id, dataTestid: "action-unban",
      ariaLabel: `Unban ${userName(e.target_id)}`, disabled: !may(P.BAN_MEMBERS), text: "Unban" })
      : e.action === "member.timeout" ? el("button", { type: "button", class: "secondary small",
        dataAction: "untimeout", dataUserId: e.target_id, dataTestid: "action-untimeout",
        ariaLabel: `Lift the timeout of ${userName(e.target_id)}`, disabled: !may(P.TIMEOUT_MEMBERS),
        text: "Lift timeout" }) : null)));
  $("audit-empty").hidden = state.audit.length > 0 || !state.current;
  $("audit-empty").textContent = note ?? "No entries.";
  $("audit-more").hidden = !state.auditHasMore;
}

/** The CSV export needs the Bearer header, so a plain link cannot fetch it: fetch it
 * here and hand the browser a file. */
async function exportAudit() {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(auditFilters().fields)) params.set(k, String(v));
  try {
    const res = await fetch(`${API}/communities/${state.current}/audit-log.csv?${params}`,
      { headers: await authHeaders() });
    if (!res.ok) {
      const e = (await res.json().catch(() => null))?.error
        ?? { code: `http_${res.status}`, message: res.statusText };
      throw new HearthError(e.code, e.message);
    }
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: `audit-log-${state.current}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) { showError(err); }
}

// ---------------------------------------------------------------------------- actions

/** What each action asks for and which op it sends. `ctx`: {item, userId, channelId...}. */
const ACTIONS = {
  delete: {
    title: "Delete message",
    summary: (c) => `Delete the message by ${userName(c.item.target_user_id)} in ${channelName(c.item.channel_id)} and resolve the item.`,
    op: () => "delete_message",
    fields: (c, f) => ({ channel_id: c.item.channel_id, message_id: c.item.message_id,
      reason: f.reason, item_id: c.item.id }),
  },
  warn: {
    title: "Warn member",
    summary: (c) => `Send ${userName(c.userId)} a warning.`,
    op: () => "warn_member",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId, reason: f.reason, item_id: c.itemId }),
  },
  timeout: {
    title: "Timeout member",
    summary: (c) => `${userName(c.userId)} will not be able to send, react, speak or join voice until the timeout ends.`,
    durations: TIMEOUTS,
    op: () => "timeout_member",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId,
      duration_s: Number(f.duration), reason: f.reason, item_id: c.itemId }),
  },
  kick: {
    title: "Kick member",
    summary: (c) => `Remove ${userName(c.userId)} from the community (they may rejoin with an invite).`,
    op: () => "kick_member",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId, reason: f.reason, item_id: c.itemId }),
  },
  ban: {
    title: "Ban member",
    summary: (c) => `Remove ${userName(c.userId)} and keep them out.`,
    durations: BANS,
    purge: true,
    op: () => "ban_member",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId,
      duration_s: f.duration ? Number(f.duration) : null, purge_hours: Number(f.purge),
      reason: f.reason, item_id: c.itemId }),
  },
  unban: {
    title: "Unban",
    summary: (c) => `Let ${userName(c.userId)} back in.`,
    op: () => "unban_member",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId, reason: f.reason }),
  },
  untimeout: {
    title: "Lift timeout",
    summary: (c) => `${userName(c.userId)} may post again at once.`,
    op: () => "remove_timeout",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId, reason: f.reason }),
  },
  "purge-user": {
    title: "Delete a member's messages",
    summary: (c) => `Delete everything ${userName(c.userId)} posted in this community in the chosen time.`,
    durations: [["1", "Last hour"], ["24", "Last day"], ["168", "Last week"]],
    op: () => "purge_messages",
    fields: (c, f) => ({ community_id: state.current, user_id: c.userId, hours: Number(f.duration),
      reason: f.reason }),
  },
  purge: {
    title: "Purge channel",
    summary: (c) => `Delete the last ${c.count} messages of ${channelName(c.channelId)}.`,
    op: () => "purge_messages",
    fields: (c, f) => ({ community_id: state.current, channel_id: c.channelId, count: c.count,
      reason: f.reason }),
  },
  "appeal-accept": {
    title: "Accept appeal",
    summary: (c) => `Lift ${userName(c.appeal.user_id)}'s ${c.appeal.action === "member.ban" ? "ban" : "timeout"}.`,
    op: () => "resolve_appeal",
    fields: (c, f) => ({ appeal_id: c.appeal.id, accept: true, reason: f.reason }),
  },
  "appeal-reject": {
    title: "Reject appeal",
    summary: (c) => `Keep ${userName(c.appeal.user_id)}'s ${c.appeal.action === "member.ban" ? "ban" : "timeout"}.`,
    op: () => "resolve_appeal",
    fields: (c, f) => ({ appeal_id: c.appeal.id, accept: false, reason: f.reason }),
  },
  resolve: {
    title: "Resolve item",
    summary: (c) => `Close item #${c.item.id} without acting on the member.`,
    decision: true,
    op: () => "resolve_review_item",
    fields: (c, f) => ({ item_id: c.item.id, decision: f.decision, reason: f.reason }),
  },
  slowmode: {
    title: "Slow mode",
    summary: (c) => (c.seconds ? `Members may post in ${channelName(c.channelId)} once every ${fmtDuration(c.seconds)}.`
      : `Turn slow mode off in ${channelName(c.channelId)}.`),
    op: () => "set_slowmode",
    fields: (c, f) => ({ channel_id: c.channelId, seconds: c.seconds, reason: f.reason }),
  },
  lock: {
    title: "Lock channel",
    summary: (c) => (c.locked ? `Only moderators may post in ${channelName(c.channelId)}.`
      : `Everyone may post in ${channelName(c.channelId)} again.`),
    op: () => "set_channel_locked",
    fields: (c, f) => ({ channel_id: c.channelId, locked: c.locked, reason: f.reason }),
  },
  lockdown: {
    title: "Community lockdown",
    summary: (c) => (c.enabled ? "Pause joins; members who joined in the last 10 minutes and accounts younger than a day cannot post."
      : "Lift the lockdown: joins resume and everyone may post."),
    op: () => "set_lockdown",
    fields: (c, f) => ({ community_id: state.current, enabled: c.enabled, reason: f.reason }),
  },
};

let pendingAction = null;
let feedSeq = 0; // keys of feed entries that have no id of their own

function openAction(kind, ctx) {
  const spec = ACTIONS[kind];
  pendingAction = { kind, ctx };
  const dialog = $("action-dialog");
  dialog.dataset.kind = kind;
  $("action-title").textContent = kind === "lock" && !ctx.locked ? "Unlock channel"
    : kind === "lockdown" && !ctx.enabled ? "Lift lockdown" : spec.title;
  $("action-summary").textContent = spec.summary(ctx);
  $("action-duration-row").hidden = !spec.durations;
  if (spec.durations) {
    $("action-duration").replaceChildren(...spec.durations.map(([v, t]) => el("option", { value: v, text: t })));
  }
  $("action-purge-row").hidden = !spec.purge;
  $("action-purge").value = "0";
  $("action-decision-row").hidden = !spec.decision;
  $("action-decision").value = "dismissed";
  $("action-reason").value = "";
  $("action-error").textContent = "";
  $("action-confirm").disabled = false;
  dialog.showModal();
  $("action-reason").focus();
}

async function confirmAction() {
  if (!pendingAction) return;
  const { kind, ctx } = pendingAction;
  const spec = ACTIONS[kind];
  const reason = $("action-reason").value.trim();
  if (!reason) {
    $("action-error").textContent = "Give a reason: it goes to the audit log.";
    $("action-reason").focus();
    return;
  }
  const form = { reason, duration: $("action-duration").value, purge: $("action-purge").value,
    decision: $("action-decision").value };
  $("action-confirm").disabled = true;
  $("action-error").textContent = "";
  try {
    const fields = spec.fields(ctx, form);
    for (const [k, v] of Object.entries(fields)) if (v == null) delete fields[k];
    const result = await request(spec.op(ctx), fields);
    pendingAction = null;
    $("action-dialog").close();
    afterAction(kind, ctx, result);
  } catch (err) {
    // A refusal keeps the dialog open, in words (the code in data-error-code).
    $("action-error").textContent = `Refused — ${describe(err)}`;
    $("action-error").dataset.errorCode = errorCode(err);
    $("action-confirm").disabled = false;
  }
}

function afterAction(kind, ctx, result) {
  if (result?.type === "mod_action" && (kind === "purge" || kind === "purge-user" || kind === "ban")) {
    showNotice(`Done: ${result.count} message${result.count === 1 ? "" : "s"} deleted.`);
  } else showNotice(`Done: ${$("action-title").textContent.toLowerCase()}.`);
  if (result?.type === "appeal") onAppeal(result.appeal);
  if (result?.type === "review_item") onItem(result.item);
  if (result?.type === "channel") {
    const c = state.communities.get(state.current);
    c?.channels.set(result.channel.id, result.channel);
    renderChannelTools();
  }
  if (kind === "delete") markDeleted([ctx.item.message_id]);
  if (kind === "lockdown") {
    const c = state.communities.get(state.current);
    if (c) c.lockdown = ctx.enabled;
    renderLockdown();
    renderFeed();
  }
  if (ctx.item && ctx.item.status !== "resolved") {
    // Acting with item_id resolved it server-side; the review_item event brings the
    // final state, this re-read covers a feed that is not live.
    if (state.subscribed !== state.current) loadQueue();
  }
}

function findItem(id) {
  return state.queue.get(id) ?? state.feed.find((f) => f.item?.id === id)?.item ?? null;
}

async function claim(item) {
  try {
    const r = await request("claim_review_item", { item_id: item.id });
    onItem(r.item);
  } catch (err) { showError(err); }
}

// --------------------------------------------------------------------------- wiring

document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn || btn.disabled || btn.closest("dialog")) return;
  const action = btn.dataset.action;
  const itemId = btn.dataset.itemId ? Number(btn.dataset.itemId) : null;
  const item = itemId ? findItem(itemId) : null;
  const userId = btn.dataset.userId ? Number(btn.dataset.userId) : null;
  if (action === "claim" && item) claim(item);
  else if (action === "appeal-accept" || action === "appeal-reject") {
    const appeal = state.appeals.get(Number(btn.dataset.appealId))
      ?? state.feed.find((f) => f.d?.appeal?.id === Number(btn.dataset.appealId))?.d.appeal;
    if (appeal) openAction(action, { appeal });
  }
  else if (action === "delete" || action === "resolve") { if (item) openAction(action, { item }); }
  else if (["warn", "timeout", "kick", "ban", "unban", "untimeout", "purge-user"].includes(action)) {
    openAction(action, { userId, item, itemId: item && item.status !== "resolved" ? item.id : null });
  } else if (action === "lockdown") openAction("lockdown", { enabled: true });
});

$("action-form").addEventListener("submit", (ev) => { ev.preventDefault(); confirmAction(); });
$("action-cancel").addEventListener("click", () => { pendingAction = null; $("action-dialog").close(); });
$("action-dialog").addEventListener("close", () => { pendingAction = null; });
$("error-close").addEventListener("click", () => { $("error-banner").hidden = true; });

$("community-select").addEventListener("change", (ev) => selectCommunity(Number(ev.target.value)));
$("queue-filter").addEventListener("change", () => loadQueue());
$("queue-refresh").addEventListener("click", () => loadQueue());
$("queue-more").addEventListener("click", () => loadQueue({ older: true }));
$("member-filter").addEventListener("input", () => renderMembers());
$("channel-select").addEventListener("change", () => renderChannelTools());
$("slowmode-apply").addEventListener("click", () => openAction("slowmode", {
  channelId: Number($("channel-select").value), seconds: Number($("slowmode-select").value) }));
$("lock-toggle").addEventListener("click", () => {
  const ch = state.communities.get(state.current)?.channels.get(Number($("channel-select").value));
  if (ch) openAction("lock", { channelId: ch.id, locked: !ch.locked });
});
$("purge-apply").addEventListener("click", () => openAction("purge", {
  channelId: Number($("channel-select").value), count: Number($("purge-count").value) }));
$("lockdown-toggle").addEventListener("click", () => openAction("lockdown",
  { enabled: $("lockdown-toggle").dataset.enabled !== "true" }));
$("audit-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadAudit(); });
$("audit-more").addEventListener("click", () => loadAudit({ older: true }));
$("audit-export").addEventListener("click", () => exportAudit());

// Debug/test hook, as on the chat page.
window.hearthMod = { state, gw, dropConnection: () => dropSocket(4000, "simulated drop") };

// ------------------------------------------------------------------------------ start

Object.assign(hooks, {
  ready: onReady,
  resumed: onResumed,
  event: onEvent,
  status: setStatus,
  authLost: (message) => {
    $("console").hidden = true;
    $("signed-out").hidden = false;
    if (message) showError(message);
  },
});
orphanErrors.report = showError;
gw.client = "hearth-mod/1";
const shell = mountShell({ page: "mod" });
resumeStoredSession().then((signedIn) => {
  if (signedIn) return;
  $("signed-out").hidden = false;
  setStatus("offline");
});
