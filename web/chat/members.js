// Who is here: a community's members with their presence (fetch_members, then the
// batched presence_update events), the member list panel, and a directory of users seen
// (members and message authors) that names mentions, DMs and typing people.
//
// Presence of large communities only arrives while subscribed (subscribe_presence), so
// the panel subscribes to the community it shows and unsubscribes when it moves on.

import { el, nameOf, request } from "../gateway.js";

const MAX_PAGES = 10; // 1,000 members: the list is for finding people, not a census
const ONLINE = new Set(["online", "idle", "dnd"]);
const STATUS_TEXT = { online: "Online", idle: "Idle", dnd: "Do not disturb", offline: "Offline" };

export const people = {
  users: new Map(), // user id -> User
  communities: new Map(), // community id -> Map(user id -> {member, status})
  loading: new Map(), // community id -> Promise
  subscribed: null,
};

export const userById = (id) => people.users.get(id) ?? null;

export function rememberUser(user) {
  if (user?.id) people.users.set(user.id, user);
}

/** Load (once) the members of a community with their presence. */
export function loadMembers(communityId, { force = false } = {}) {
  if (!communityId) return Promise.resolve(new Map());
  if (!force && people.loading.has(communityId)) return people.loading.get(communityId);
  const job = (async () => {
    const members = new Map();
    let after = 0;
    for (let page = 0; page < MAX_PAGES; page++) {
      const r = await request("fetch_members", { community_id: communityId, after, limit: 100 });
      r.members.forEach((m, i) => {
        rememberUser(m.user);
        members.set(m.user.id, { member: m, status: r.presences[i]?.status ?? "offline" });
      });
      if (!r.has_more || !r.members.length) break;
      after = r.members.at(-1).user.id;
    }
    people.communities.set(communityId, members);
    return members;
  })();
  people.loading.set(communityId, job);
  job.catch(() => people.loading.delete(communityId));
  return job;
}

/** Subscribe to one community's presence (harmless for small ones, which get it anyway). */
/** Subscribe to one community's presence. `isLarge(id)`: whether a community is above
 * `limits.presence_auto_max_members`; only those are unsubscribed when the page moves
 * on (unsubscribing opts out of a small one's automatic presence too, which DMs and
 * the other lists still use). A DM keeps the last community's subscription. */
export function watchPresence(communityId, isLarge = () => false) {
  if (!communityId || people.subscribed === communityId) return;
  const previous = people.subscribed;
  people.subscribed = communityId;
  if (previous && isLarge(previous)) {
    request("subscribe_presence", { community_id: previous, subscribed: false }, { retry: false }).catch(() => {});
  }
  request("subscribe_presence", { community_id: communityId }, { retry: false }).catch(() => {});
}

/** A presence_update: "changed" when a loaded community changed, "stale" when it names
 * someone the list does not have (joins without a member_join, e.g. the starter
 * community's, show up this way), "" otherwise. */
export function onPresence(d) {
  const members = people.communities.get(d.community_id);
  if (!members) return "";
  let stale = false;
  for (const p of d.presences) {
    const entry = members.get(p.user_id);
    if (entry) entry.status = p.status; else stale = true;
  }
  return stale ? "stale" : "changed";
}

export function onMemberJoin(d) {
  rememberUser(d.member.user);
  const members = people.communities.get(d.member.community_id);
  if (members && !members.has(d.member.user.id)) members.set(d.member.user.id, { member: d.member, status: "online" });
}

export function onMemberLeave(communityId, userId) {
  people.communities.get(communityId)?.delete(userId);
}

/** Members of a community for autocomplete, best matches first. */
export function membersMatching(communityId, query, limit = 8) {
  const q = query.toLowerCase();
  const members = [...(people.communities.get(communityId)?.values() ?? [])].map((e) => e.member.user);
  return members
    .filter((u) => u.username.toLowerCase().startsWith(q) || u.display_name.toLowerCase().startsWith(q)
      || (q.length > 1 && nameOf(u).toLowerCase().includes(q)))
    .sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
    .slice(0, limit);
}

function memberRow(entry, meId, groupMode, selected) {
  const u = entry.member.user;
  const status = entry.status === "invisible" ? "offline" : entry.status;
  return el("li", { class: `member status-${status}`, dataTestid: "member", dataUserId: u.id,
    dataUserName: u.username, dataStatus: status },
  groupMode && u.id !== meId ? el("input", { type: "checkbox", class: "group-pick", checked: selected.has(u.id),
    dataUserId: u.id, ariaLabel: `Add ${nameOf(u)} to the group`, dataTestid: "group-pick" }) : null,
  el("span", { class: "presence-dot", dataTestid: "presence-dot", title: STATUS_TEXT[status] ?? status, ariaHidden: "true" }),
  el("button", { type: "button", class: "link member-name", dataAction: "profile", dataUserId: u.id,
    text: nameOf(u) + (u.id === meId ? " (you)" : "") }),
  el("span", { class: "visually-hidden", dataTestid: "member-status", text: STATUS_TEXT[status] ?? status }),
  entry.member.role !== "member" ? el("span", { class: "role-tag muted", text: entry.member.role }) : null);
}

/** The people of a DM or group DM, with the presence any shared community shows. */
function dmMembers(userIds) {
  const members = new Map();
  for (const id of userIds) {
    let entry = null;
    for (const list of people.communities.values()) entry ??= list.get(id) ?? null;
    const user = entry?.member.user ?? userById(id);
    if (user) members.set(id, { member: { user, role: "member" }, status: entry?.status ?? "offline" });
  }
  return members;
}

/** Render the member list of a community (or, with `dmUserIds`, of a DM) into `root`. */
export function renderMemberList(root, communityId, { meId, groupMode = false, selected = new Set(), dmUserIds = null }) {
  const members = dmUserIds ? dmMembers(dmUserIds) : people.communities.get(communityId);
  if (!members) {
    root.replaceChildren(el("p", { class: "muted", text: communityId ? "Loading members…" : "" }));
    return;
  }
  const all = [...members.values()].sort((a, b) => nameOf(a.member.user).localeCompare(nameOf(b.member.user)));
  const online = all.filter((e) => ONLINE.has(e.status));
  const offline = all.filter((e) => !ONLINE.has(e.status));
  const section = (title, list, id) => (list.length ? el("section", { dataTestid: id },
    el("h4", { text: `${title} — ${list.length}` }),
    el("ul", {}, ...list.map((e) => memberRow(e, meId, groupMode, selected)))) : null);
  root.replaceChildren(...[section("Online", online, "members-online"), section("Offline", offline, "members-offline")]
    .filter(Boolean));
}

/** A small card for a user with "Send message" (opens or reuses a DM). */
export function showProfile(anchor, user, { meId, onMessage }) {
  document.querySelector(".profile-card")?.remove();
  if (!user) return;
  const card = el("div", { class: "profile-card", role: "dialog", ariaLabel: nameOf(user), dataTestid: "profile-card" },
    el("strong", { text: nameOf(user) }), el("span", { class: "muted", text: `@${user.username}` }),
    user.id !== meId ? el("button", { type: "button", dataTestid: "message-user-button", text: "Send message" }) : null);
  card.querySelector("button")?.addEventListener("click", () => { card.remove(); onMessage(user); });
  document.body.append(card);
  const r = anchor.getBoundingClientRect();
  card.style.top = `${Math.min(r.bottom + 4, window.innerHeight - card.offsetHeight - 8)}px`;
  card.style.left = `${Math.max(8, Math.min(r.left, window.innerWidth - card.offsetWidth - 8))}px`;
  const close = (ev) => {
    if (!card.contains(ev.target)) { card.remove(); document.removeEventListener("mousedown", close); }
  };
  setTimeout(() => document.addEventListener("mousedown", close));
}

/** The name a DM or group DM shows: the other people in it. */
export function dmName(channel, meId) {
  const others = (channel.member_ids ?? []).filter((id) => id !== meId);
  const names = others.map((id) => userById(id)).filter(Boolean).map(nameOf);
  if (names.length === others.length && names.length) return names.join(", ");
  return channel.name || (names.length ? names.join(", ") : "Direct message");
}
