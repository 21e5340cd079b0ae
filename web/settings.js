// Hearth community settings (/settings): what an owner or admin sets up without a
// single hand-made REST call — the community's name, channels, categories, voice rooms
// and stages (order, privacy, tiers), roles with their channel permissions, automod
// rules, invites, and live sessions (schedule, start, end, attendance).
//
// Plain ES module, no build step. Every change is one REST call of docs/rest.md through
// gateway.js's `api` (signed in by session.js); the server checks every one, so the
// page only offers and reports. Errors are worded by errors.js; the header is shell.js.

import { api, el, hooks, nameOf } from "./gateway.js";
import * as session from "./session.js";
import { banners } from "./errors.js";
import { mountShell } from "./shell.js";
import { PERMS } from "./pages.js";

const $ = (id) => document.getElementById(id);

const BIT = {
  VIEW_CHANNEL: 1 << 0, SEND_MESSAGES: 1 << 1, ADD_REACTIONS: 1 << 2, ATTACH_FILES: 1 << 3,
  MENTION_EVERYONE: 1 << 4, CREATE_THREADS: 1 << 5, CONNECT_VOICE: 1 << 8, SPEAK: 1 << 9,
  ...PERMS,
};
const ROLE_BITS = [
  ["SEND_MESSAGES", "Send messages"], ["ADD_REACTIONS", "React"], ["ATTACH_FILES", "Attach files"],
  ["MENTION_EVERYONE", "Mention @everyone"], ["CREATE_THREADS", "Start threads"],
  ["CONNECT_VOICE", "Join voice"], ["SPEAK", "Speak in voice"],
  ["MANAGE_MESSAGES", "Delete others' messages"], ["TIMEOUT_MEMBERS", "Time members out"],
  ["KICK_MEMBERS", "Kick members"], ["BAN_MEMBERS", "Ban members"],
  ["MANAGE_CHANNELS", "Manage channels"], ["VIEW_AUDIT_LOG", "See the audit log"],
  ["MODERATE", "Moderate (review queue, warnings)"],
];
const OVERRIDE_BITS = [
  ["VIEW_CHANNEL", "See the channel"], ["SEND_MESSAGES", "Send messages"],
  ["ADD_REACTIONS", "React"], ["ATTACH_FILES", "Attach files"],
  ["CONNECT_VOICE", "Join voice"], ["SPEAK", "Speak"],
];
const KIND_LABEL = { text: "#", announcement: "#", category: "", voice: "♪", stage: "♪" };
const KIND_PILL = { announcement: "announcements", voice: "voice room", stage: "stage" };
const SETTINGS_BITS = PERMS.MANAGE_COMMUNITY | PERMS.MANAGE_CHANNELS | PERMS.MANAGE_ROLES
  | PERMS.MANAGE_AUTOMOD | PERMS.ADMINISTRATOR;

const state = {
  communities: [], // snapshots the person may manage
  current: null, // the snapshot shown
  roles: [],
  members: [],
  live: [],
};

// ------------------------------------------------------------------------ feedback

const feedback = banners();
const { showError, showNotice } = feedback;
const act = feedback.act.bind(feedback);


const cid = () => state.current.community.id;
const byPosition = (a, b) => a.position - b.position || a.id - b.id;
/** The community's channels in sidebar order: top-level ones (categories included) by
 * position, each category followed by its own channels. */
function channels() {
  const all = state.current.channels.filter((c) => c.kind !== "thread");
  const ids = new Set(all.map((c) => c.id));
  const top = all.filter((c) => !c.parent_id || !ids.has(c.parent_id)).sort(byPosition);
  return top.flatMap((c) => [c, ...all.filter((k) => k.parent_id === c.id).sort(byPosition)]);
}
const siblings = (c) => channels().filter((k) => (k.parent_id ?? 0) === (c.parent_id ?? 0)
  || (!channels().some((p) => p.id === k.parent_id) && !channels().some((p) => p.id === c.parent_id)));
const when = (ms) => new Date(ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

// ---------------------------------------------------------------------------- load

async function loadCommunities(wanted) {
  const { communities } = await api("GET", "/communities");
  state.communities = communities.filter((c) => (c.permissions & SETTINGS_BITS) !== 0
    || c.role === "owner" || c.role === "admin");
  const pick = state.communities.find((c) => c.community.id === wanted)
    ?? state.communities.find((c) => c.community.id === state.current?.community.id)
    ?? state.communities[0] ?? null;
  state.current = pick;
  $("no-access").hidden = !!pick;
  $("settings").hidden = !pick;
  if (!pick) return;
  shell.setCommunity(pick.community.id);
  const url = new URL(location.href);
  url.searchParams.set("community", pick.community.id);
  history.replaceState(null, "", url);
}

async function show(wanted = null) {
  await loadCommunities(wanted);
  if (!state.current) return;
  $("settings-title").textContent = `${state.current.community.name} settings`;
  $("community-name").value = state.current.community.name;
  $("community-description").value = state.current.community.description ?? "";
  renderChannels();
  await Promise.all([loadRoles(), loadMembers(), loadRules(), loadInvites(), loadLive()]
    .map((p) => p.catch(showError)));
}

// ------------------------------------------------------------------------ channels

function renderChannels() {
  const list = channels();
  const categories = list.filter((c) => c.kind === "category");
  $("channel-list").replaceChildren(...list.map((c) => {
    const sibs = siblings(c);
    const i = sibs.indexOf(c);
    return el("li", {
      class: `row-item kind-${c.kind}${c.parent_id ? " nested" : ""}`, dataTestid: "channel-row",
      dataChannelName: c.name, dataChannelId: String(c.id),
    },
    el("span", { class: "kind", ariaHidden: "true", text: KIND_LABEL[c.kind] ?? "#" }),
    el("span", { class: "grow", text: c.name }),
    KIND_PILL[c.kind] ? el("span", { class: "pill", text: KIND_PILL[c.kind] }) : null,
    c.private ? el("span", { class: "pill", text: "private" }) : null,
    c.required_tier ? el("span", { class: "pill", text: `tier ${c.required_tier}` }) : null,
    el("button", { type: "button", class: "icon", ariaLabel: `Move ${c.name} up`, text: "↑",
      dataAction: "up", disabled: i === 0 }),
    el("button", { type: "button", class: "icon", ariaLabel: `Move ${c.name} down`, text: "↓",
      dataAction: "down", disabled: i === sibs.length - 1 }));
  }));
  $("channel-parent").replaceChildren(el("option", { value: "", text: "(none)" }),
    ...categories.map((c) => el("option", { value: String(c.id), text: c.name })));
  const postable = list.filter((c) => c.kind !== "category");
  const keep = $("override-channel").value;
  $("override-channel").replaceChildren(...postable.map((c) =>
    el("option", { value: String(c.id), text: `${KIND_LABEL[c.kind] ?? "#"} ${c.name}` })));
  if (postable.some((c) => String(c.id) === keep)) $("override-channel").value = keep;
  loadOverrides().catch(showError);
}

$("channel-list").addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const moved = channels().find((c) => String(c.id) === btn.closest("li").dataset.channelId);
  if (!moved) return;
  const sibs = siblings(moved);
  const i = sibs.indexOf(moved);
  const j = btn.dataset.action === "up" ? i - 1 : i + 1;
  if (j < 0 || j >= sibs.length) return;
  // Swap the two among their siblings, then number every channel by its place in the
  // whole list (positions may repeat in older communities): one order everywhere.
  const other = sibs[j];
  const swapped = new Map([[moved.id, other.position], [other.id, moved.position]]);
  const order = state.current.channels.map((c) => ({ ...c, position: swapped.get(c.id) ?? c.position }));
  act(null, async () => {
    const before = state.current.channels;
    state.current = { ...state.current, channels: order };
    const target = channels();
    state.current = { ...state.current, channels: before };
    for (const [k, c] of target.entries()) {
      const now = before.find((b) => b.id === c.id);
      if (now.position !== k || c.id === moved.id || c.id === other.id) {
        await api("PATCH", `/channels/${c.id}`, { position: k });
      }
    }
    await show(cid());
  }, "Order saved.");
});

$("channel-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const kind = $("channel-kind").value;
  const body = { name: $("channel-name").value.trim(), kind, private: $("channel-private").checked };
  const parent = Number($("channel-parent").value);
  if (parent && kind !== "category") body.parent_id = parent;
  const tier = Number($("channel-tier").value) || 0;
  act(form, async () => {
    const { channel } = await api("POST", `/communities/${cid()}/channels`, body);
    if (tier > 0) await api("PUT", `/channels/${channel.id}/tier`, { tier });
    form.reset();
    await show(cid());
  }, `Created ${body.name}.`);
});

$("community-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = { name: $("community-name").value.trim(),
    description: $("community-description").value.trim() };
  act(ev.target, async () => {
    await api("PATCH", `/communities/${cid()}`, body);
    await show(cid());
    shell.refresh();
  }, "Community settings saved.");
});

// --------------------------------------------------------------------------- roles

function roleTargets() {
  return [["everyone", 0, "Everyone"], ...state.roles.map((r) => ["role", r.id, r.name])];
}

async function loadRoles() {
  ({ roles: state.roles } = await api("GET", `/communities/${cid()}/roles`));
  $("role-list").replaceChildren(...state.roles.map((r) => el("li", {
    class: "row-item", dataTestid: "role-row", dataRoleName: r.name,
  }, el("span", { class: "grow", text: r.name }),
  el("span", { class: "muted", text: ROLE_BITS.filter(([k]) => r.permissions & BIT[k])
    .map(([, label]) => label).join(", ") || "no extra permissions" }))));
  const keep = $("override-target").value;
  $("override-target").replaceChildren(...roleTargets().map(([kind, id, name]) =>
    el("option", { value: `${kind}:${id}`, text: name })));
  if (keep && [...$("override-target").options].some((o) => o.value === keep)) {
    $("override-target").value = keep;
  }
  $("member-role-select").replaceChildren(...state.roles.map((r) =>
    el("option", { value: String(r.id), text: r.name })));
  await loadOverrides();
}

async function loadMembers() {
  ({ members: state.members } = await api("GET", `/communities/${cid()}/members?limit=100`));
  $("member-select").replaceChildren(...state.members.filter((m) => !m.user.bot).map((m) =>
    el("option", { value: String(m.user.id), text: `${nameOf(m.user)} (@${m.user.username})` })));
}

function renderRoleBits() {
  $("role-perms").append(...ROLE_BITS.map(([key, label]) => el("label", { class: "check" },
    el("input", { type: "checkbox", value: key, dataTestid: `role-perm-${key}` }), ` ${label}`)));
  $("override-bits").replaceChildren(...OVERRIDE_BITS.map(([key, label]) => el("label", {},
    `${label} `,
    el("select", { dataBit: key, dataTestid: `override-bit-${key}`, ariaLabel: label },
      el("option", { value: "", text: "as usual" }),
      el("option", { value: "allow", text: "allow" }),
      el("option", { value: "deny", text: "deny" })))));
}

$("role-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("role-name").value.trim();
  let permissions = 0;
  for (const box of $("role-perms").querySelectorAll("input:checked")) permissions |= BIT[box.value];
  act(ev.target, async () => {
    await api("POST", `/communities/${cid()}/roles`, { name, permissions });
    ev.target.reset();
    await loadRoles();
  }, `Role ${name} created.`);
});

$("member-role-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const userId = Number($("member-select").value);
  const roleId = Number($("member-role-select").value);
  const member = state.members.find((m) => m.user.id === userId);
  if (!member || !roleId) return;
  act(ev.target, async () => {
    const roleIds = [...new Set([...(member.role_ids ?? []), roleId])];
    await api("PUT", `/communities/${cid()}/members/${userId}/roles`, { role_ids: roleIds });
    await loadMembers();
  }, `${nameOf(member.user)} has the role now.`);
});

let overrideEdits = 0; // bumped when the person changes a bit: a late read must not undo it
async function loadOverrides() {
  const channelId = Number($("override-channel").value);
  if (!channelId) { $("override-list").replaceChildren(); return; }
  const edits = overrideEdits;
  const { overrides } = await api("GET", `/channels/${channelId}/overrides`);
  const names = new Map(roleTargets().map(([kind, id, name]) => [`${kind}:${id}`, name]));
  const words = (bits) => OVERRIDE_BITS.filter(([k]) => bits & BIT[k]).map(([, l]) => l).join(", ");
  $("override-list").replaceChildren(...overrides.filter((o) => o.kind !== "member").map((o) =>
    el("li", { class: "row-item", dataTestid: "override-row" },
      el("span", { class: "grow", text: names.get(`${o.kind}:${o.target_id}`) ?? o.kind }),
      o.allow ? el("span", { class: "pill ok", text: `allow: ${words(o.allow) || o.allow}` }) : null,
      o.deny ? el("span", { class: "pill danger", text: `deny: ${words(o.deny) || o.deny}` }) : null)));
  const current = overrides.find((o) => `${o.kind}:${o.target_id}` === $("override-target").value);
  if (edits !== overrideEdits) return;
  for (const select of $("override-bits").querySelectorAll("select")) {
    const bit = BIT[select.dataset.bit];
    select.value = current?.allow & bit ? "allow" : current?.deny & bit ? "deny" : "";
  }
}

$("override-channel").addEventListener("change", () => loadOverrides().catch(showError));
$("override-bits").addEventListener("change", () => { overrideEdits += 1; });
$("override-target").addEventListener("change", () => loadOverrides().catch(showError));
$("override-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const channelId = Number($("override-channel").value);
  const [kind, target] = $("override-target").value.split(":");
  let allow = 0;
  let deny = 0;
  for (const select of $("override-bits").querySelectorAll("select")) {
    if (select.value === "allow") allow |= BIT[select.dataset.bit];
    if (select.value === "deny") deny |= BIT[select.dataset.bit];
  }
  act(ev.target, async () => {
    if (allow || deny) {
      await api("PUT", `/channels/${channelId}/overrides/${kind}/${target}`, { allow, deny });
    } else {
      await api("DELETE", `/channels/${channelId}/overrides/${kind}/${target}`).catch((err) => {
        if (err.code !== "not_found") throw err;
      });
    }
    await loadOverrides();
  }, "Channel permissions saved.");
});

// ------------------------------------------------------------------------- automod

async function loadRules() {
  const { rules } = await api("GET", `/communities/${cid()}/automod/rules`);
  $("rule-list").replaceChildren(...rules.map((r) => el("li", {
    class: "row-item", dataTestid: "rule-row", dataRuleName: r.name,
  }, el("span", { class: "grow", text: r.name }),
  el("span", { class: "muted", text: `${(r.trigger.keywords ?? [r.trigger.type]).join(", ")} → ${r.actions.join(", ")}` }),
  el("button", { type: "button", class: "secondary", dataRuleId: String(r.id),
    dataTestid: "rule-delete", text: "Delete" }))));
}

$("rule-list").addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-rule-id]");
  if (!btn || !window.confirm("Delete this rule?")) return;
  act(null, async () => {
    await api("DELETE", `/communities/${cid()}/automod/rules/${btn.dataset.ruleId}`);
    await loadRules();
  }, "Rule deleted.");
});

$("rule-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const keywords = $("rule-keywords").value.split(",").map((k) => k.trim()).filter(Boolean);
  const actions = [...ev.target.querySelectorAll("input[name=action]:checked")].map((b) => b.value);
  if (!actions.length) { showError("Pick what the rule does when it matches."); return; }
  const body = { name: $("rule-name").value.trim(), trigger: { type: "keyword", keywords }, actions };
  act(ev.target, async () => {
    await api("POST", `/communities/${cid()}/automod/rules`, body);
    ev.target.reset();
    await loadRules();
  }, `Rule ${body.name} created.`);
});

// ------------------------------------------------------------------------- invites

async function loadInvites() {
  const { invites } = await api("GET", `/communities/${cid()}/invites`);
  $("invite-list").replaceChildren(...invites.map((i) => el("li", {
    class: "row-item", dataTestid: "invite-row", dataCode: i.code,
  }, el("code", { class: "grow", dataTestid: "invite-code", text: i.code }),
  el("span", { class: "muted", text: `${i.uses}${i.max_uses ? ` / ${i.max_uses}` : ""} used`
    + (i.expires_at ? ` · until ${when(i.expires_at)}` : "") }),
  el("button", { type: "button", class: "secondary", dataCode: i.code,
    dataTestid: "invite-revoke", text: "Revoke" }))));
}

$("invite-list").addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-code]");
  if (!btn) return;
  act(null, async () => {
    await api("DELETE", `/communities/${cid()}/invites/${encodeURIComponent(btn.dataset.code)}`);
    await loadInvites();
  }, "Invite revoked: it no longer works.");
});

$("invite-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = {};
  if ($("invite-uses").value) body.max_uses = Number($("invite-uses").value);
  if ($("invite-expiry").value) body.expires_in_s = Number($("invite-expiry").value);
  act(ev.target, async () => {
    const { code } = await api("POST", `/communities/${cid()}/invites`, body);
    await loadInvites();
    showNotice(`Invite created: ${code}`);
  });
});

// --------------------------------------------------------------------------- live

async function loadLive() {
  ({ sessions: state.live } = await api("GET", `/communities/${cid()}/live-sessions`));
  const buttons = (s) => {
    const out = [];
    if (s.state === "scheduled") {
      out.push(["start", "Start"], ["cancel", "Cancel"]);
    } else if (s.state === "live") out.push(["end", "End"]);
    out.push(["attendance", "Attendance"]);
    return out.map(([action, label]) => el("button", { type: "button",
      class: action === "start" ? "" : "secondary", dataAction: action,
      dataSessionId: String(s.id), dataTestid: `live-${action}`, text: label }));
  };
  $("live-list").replaceChildren(...state.live.map((s) => el("li", {
    class: "row-item", dataTestid: "live-row", dataTitle: s.title, dataState: s.state,
  }, el("span", { class: "grow", text: s.title }),
  el("span", { class: "muted", text: when(s.starts_at) }),
  el("span", { class: `pill${s.state === "live" ? " ok" : ""}`, dataTestid: "live-state", text: s.state }),
  s.state === "live" ? el("a", { href: `/voice?community=${cid()}&channel=${s.channel_id}`,
    text: "Open stage" }) : null,
  ...buttons(s))));
}

$("live-list").addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const { action, sessionId } = btn.dataset;
  const path = `/communities/${cid()}/live-sessions/${sessionId}`;
  if (action === "attendance") { showAttendance(path).catch(showError); return; }
  if (action === "cancel" && !window.confirm("Cancel this session?")) return;
  act(null, async () => {
    await api("POST", `${path}/${action}`);
    await loadLive();
  }, { start: "The session is live.", end: "The session has ended.", cancel: "Session cancelled." }[action]);
});

async function showAttendance(path) {
  const report = await api("GET", `${path}/attendance`);
  const names = new Map(state.members.map((m) => [m.user.id, nameOf(m.user)]));
  const box = $("attendance");
  box.hidden = false;
  box.replaceChildren(el("h3", { text: "Attendance" }),
    el("p", { dataTestid: "attendance-summary",
      text: `${report.attendees.length} attended · ${report.registered.length} registered · ${report.missed.length} missed` }),
    el("ul", { class: "rows" }, ...report.attendees.map((a) => el("li", {
      class: "row-item", dataTestid: "attendee-row" },
    el("span", { class: "grow", text: names.get(a.user_id) ?? `member ${a.user_id}` }),
    el("span", { class: "muted", text: `${Math.round(a.total_s / 60)} min` })))));
}

$("live-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const startsAt = new Date($("live-starts").value).getTime();
  if (!Number.isFinite(startsAt)) { showError("Pick when the session starts."); return; }
  const body = { title: $("live-title").value.trim(), starts_at: startsAt,
    duration_s: Math.max(60, Math.round(Number($("live-duration").value || 60) * 60)) };
  act(ev.target, async () => {
    await api("POST", `/communities/${cid()}/live-sessions`, body);
    ev.target.reset();
    await Promise.all([loadLive(), show(cid())]);
  }, `Scheduled ${body.title}.`);
});

// -------------------------------------------------------------------------- start

renderRoleBits();
hooks.authLost = (message) => {
  $("settings").hidden = true;
  $("no-access").hidden = true;
  $("signed-out").hidden = false;
  if (message) showError(message);
};
const shell = mountShell({ page: "settings", onCommunity: (id) => show(id).catch(showError) });
window.hearthSettings = { state };

session.on("signedIn", (_user, from) => {
  if (from !== "other tab") return;
  $("signed-out").hidden = true;
  show(Number(new URLSearchParams(location.search).get("community")) || null).catch(showError);
});
session.restore().then((user) => {
  if (!user) { hooks.authLost(""); return; }
  show(Number(new URLSearchParams(location.search).get("community")) || null).catch(showError);
}, showError);
