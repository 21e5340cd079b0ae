// Hearth voice rooms and live-session stages in the browser (issue 6). Plain ES module, no
// build step; the connection layer is gateway.js (shared with the chat page and the
// moderator console), and the page runs on the browser's one sign-in (session.js): a new
// tab needs no second sign-in, and signing in here signs in every page. The header is
// shell.js; errors are worded by errors.js.
//
// Media: one RTCPeerConnection per room, offered by us and never renegotiated (the
// server's SFU design, protocol/voice.py): the first transceiver is the microphone
// (sendrecv), then `limits.voice_receive_slots` recvonly transceivers the server forwards
// the active speakers into. Each slot plays through its own <audio> element. Moving rooms,
// or a fresh gateway session, means a new connection with a new offer.
//
// The page never decides what a member may do: it offers the controls and shows the
// server's refusal (e.g. a stage listener's raise-hand is fine, promoting is not).

import {
  HearthError, api, dropSocket, el, gw, hooks, nameOf, orphanErrors, request,
  resumeStoredSession, signIn, connect, signOut, store,
} from "./gateway.js";
import { gathered, slotLevels } from "./voice_media.js";
import { VOICE_KINDS, voiceIcon } from "./channel_kinds.js";
import { nextHourLocal, scheduleBody } from "./schedule_form.js";
import { createQa } from "./stage_qa.js";
import {
  attendanceView, replaceKeepingFocus, scheduleItem, sessionDetails, sortSchedule, stateLabel,
} from "./stage_view.js";
import { errorCode, friendlyError } from "./errors.js";
import { mountShell } from "./shell.js";

const $ = (id) => document.getElementById(id);
const MEMBER_PAGES = 10; // fetch_members pages of 100 loaded for names
const MAX_ROOMS_FETCHED = 50; // voice_fetch_states calls per community selection
const P = { MANAGE_CHANNELS: 1 << 14, MODERATE: 1 << 17, MUTE_MEMBERS: 1 << 21, ADMINISTRATOR: 1 << 30 };

// ------------------------------------------------------------------------------ state

const state = {
  me: null,
  limits: null,
  iceServers: [],
  communities: new Map(), // id -> {community, role, permissions, channels: Map}
  current: null, // community id
  selected: null, // channel id shown in the room panel
  users: new Map(), // user id -> User
  rooms: new Map(), // channel id -> Map(user id -> participant)
  speaking: new Map(), // channel id -> Set(user id)
  sessions: new Map(), // channel id -> LiveSession (stage channels)
  allSessions: new Map(), // session id -> LiveSession (the schedule of this community)
  registered: new Set(), // session ids I registered for from this page
  attendance: null, // {sessionId, report} shown to a host
  stages: new Map(), // session id -> {speakers, cohosts, hands}
  questions: new Map(), // question id -> Question (selected session)
  voted: new Set(), // question ids I voted for
  generation: 0, // bumps on community switch: late replies for the old one are dropped
};

/** The call in progress (null when not in a room). */
let call = null;
let audioCtx = null;

// ------------------------------------------------------------------------- UI helpers

let errorTimer = null;
function showError(err) {
  $("error-text").textContent = describe(err);
  $("error-text").dataset.errorCode = errorCode(err);
  $("error-banner").hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { $("error-banner").hidden = true; }, 10000);
}

function describe(err) {
  return friendlyError(err);
}

function setStatus(text, kind = "") {
  $("connection-status").textContent = text;
  $("connection-status").dataset.state = kind;
}

function setVoiceStatus(text, kind = "") {
  $("voice-status").textContent = text;
  $("voice-status").dataset.state = kind;
}

function userName(id) {
  if (id === state.me?.id) return `${nameOf(state.me)} (you)`;
  const u = state.users.get(id);
  if (!u) scheduleMemberReload();
  return u ? nameOf(u) : `user #${id}`;
}

function channel(id) {
  for (const c of state.communities.values()) if (c.channels.has(id)) return c.channels.get(id);
  return null;
}

function perms() {
  return state.communities.get(state.current)?.permissions ?? 0;
}

/** Whether I run the session on this stage: its host, a co-host, or a channel manager
 * (the server checks again; this only decides which buttons to offer). */
function isHost(session) {
  if (!session || !state.me) return false;
  const p = perms();
  return session.host_id === state.me.id || (session.cohost_ids ?? []).includes(state.me.id)
    || (p & (P.MANAGE_CHANNELS | P.ADMINISTRATOR)) !== 0;
}

function canModerateQa(session) {
  return isHost(session) || (perms() & P.MODERATE) !== 0;
}

// --------------------------------------------------------------------------- gateway

function addSnapshot(snap) {
  state.communities.set(snap.community.id, {
    community: snap.community, role: snap.role, permissions: snap.permissions ?? 0,
    channels: new Map(snap.channels.filter((c) => VOICE_KINDS.has(c.kind)).map((c) => [c.id, c])),
  });
}

function onHello(f) {
  state.limits = f.limits ?? null;
  // A deployment behind NAT hands out STUN/TURN servers; a LAN or loopback needs none.
  state.iceServers = f.ice_servers ?? f.voice?.ice_servers ?? [];
}

function onReady(f) {
  state.me = f.user;
  $("me-name").textContent = nameOf(f.user);
  $("auth-view").hidden = true;
  $("voice-view").hidden = false;
  $("logout").hidden = false;
  state.communities.clear();
  f.communities.forEach(addSnapshot);
  renderCommunitySelect();
  const params = new URLSearchParams(location.search);
  const wanted = Number(params.get("community")) || Number(store.get("voice.community"));
  const pick = [state.current, wanted].find((id) => id && state.communities.has(id))
    ?? [...state.communities.keys()][0] ?? null;
  const wantedChannel = state.selected ?? (Number(params.get("channel")) || null);
  selectCommunity(pick, wantedChannel);
  // A fresh session: the old one's voice connection is gone on the server side.
  if (call) rejoin(call.channelId);
}

function onResumed() {
  if (state.current) loadRooms(state.current);
}

function onEvent(d) {
  switch (d.t) {
    case "voice_state_update": onVoiceState(d); break;
    case "voice_speaking": onSpeaking(d); break;
    case "voice_disconnected":
      if (call && call.channelId === d.channel_id) {
        const ended = state.sessions.get(d.channel_id)?.state === "ended";
        endCall(ended ? "The session has ended." : `Disconnected from the room (${d.reason}).`);
      }
      break;
    case "voice_move_request":
      if (call && call.channelId === d.channel_id) {
        const to = channel(d.to_channel_id);
        setVoiceStatus(`Moved to ${to ? to.name : `channel #${d.to_channel_id}`}…`);
        rejoin(d.to_channel_id);
      }
      break;
    case "stage_update": onStage(d); break;
    case "qa_update": onQuestion(d.question); break;
    case "live_session_update": onSession(d.session); break;
    case "channel_create":
    case "channel_update": {
      const c = state.communities.get(d.channel?.community_id);
      if (c && VOICE_KINDS.has(d.channel.kind)) {
        c.channels.set(d.channel.id, d.channel);
        if (d.channel.community_id === state.current) renderRooms();
        if (d.channel.id === state.selected) renderRoom();
      }
      break;
    }
    case "channel_delete": {
      for (const c of state.communities.values()) c.channels.delete(d.channel_id);
      renderRooms();
      break;
    }
    default: break;
  }
}

function onVoiceState(d) {
  let room = state.rooms.get(d.channel_id);
  if (!room) { room = new Map(); state.rooms.set(d.channel_id, room); }
  if (d.joined) {
    room.set(d.user_id, { user_id: d.user_id, self_mute: d.self_mute, self_deaf: d.self_deaf,
      server_mute: d.server_mute, role: d.role, speaking: false });
  } else {
    room.delete(d.user_id);
    state.speaking.get(d.channel_id)?.delete(d.user_id);
  }
  if (d.user_id === state.me?.id && call?.channelId === d.channel_id && d.joined) {
    call.serverMute = d.server_mute;
    call.role = d.role;
    applyMic();
    renderControls();
  }
  renderRooms();
  if (d.channel_id === state.selected) renderParticipants();
}

function onSpeaking(d) {
  state.speaking.set(d.channel_id, new Set(d.user_ids));
  if (d.channel_id === state.selected) renderParticipants();
}

// ---------------------------------------------------------------------- communities

function renderCommunitySelect() {
  const select = $("community-select");
  select.replaceChildren(...[...state.communities.values()].map((c) =>
    el("option", { value: String(c.community.id), text: c.community.name })));
  select.disabled = state.communities.size === 0;
}

async function selectCommunity(cid, channelId = null) {
  const gen = ++state.generation;
  state.current = cid;
  if (cid) { store.set("voice.community", cid); shell.setCommunity(cid); }
  $("community-select").value = cid ? String(cid) : "";
  syncUrl();
  state.users.clear();
  state.sessions.clear();
  state.allSessions.clear();
  renderRooms();
  renderSchedule();
  const chans = state.communities.get(cid)?.channels;
  const keep = channelId && chans?.has(channelId) ? channelId : null;
  selectRoom(keep ?? (call && chans?.has(call.channelId) ? call.channelId : null));
  if (!cid) return;
  await Promise.all([loadMembers(cid, gen), loadRooms(cid, gen), loadSessions(cid, gen)]);
  if (gen !== state.generation) return;
  renderRooms();
  renderRoom();
}

async function loadMembers(cid, gen = state.generation) {
  let after = 0;
  try {
    for (let page = 0; page < MEMBER_PAGES; page++) {
      const r = await request("fetch_members", { community_id: cid, after, limit: 100 });
      if (gen !== state.generation) return;
      for (const m of r.members) state.users.set(m.user.id, m.user);
      if (!r.has_more || r.members.length === 0) break;
      after = r.members[r.members.length - 1].user.id;
    }
  } catch (err) { showError(err); }
}

let memberReload = null;
function scheduleMemberReload() {
  if (memberReload || !state.current) return;
  memberReload = setTimeout(async () => {
    await loadMembers(state.current);
    memberReload = null;
    renderParticipants();
    renderStage();
    renderQuestions();
  }, 500);
}

async function loadRooms(cid, gen = state.generation) {
  const ids = [...(state.communities.get(cid)?.channels.keys() ?? [])].slice(0, MAX_ROOMS_FETCHED);
  await Promise.all(ids.map(async (id) => {
    try {
      const r = await request("voice_fetch_states", { channel_id: id });
      if (gen !== state.generation) return;
      state.rooms.set(id, new Map(r.participants.map((p) => [p.user_id, p])));
      state.speaking.set(id, new Set(r.participants.filter((p) => p.speaking).map((p) => p.user_id)));
    } catch (err) {
      if (err.code !== "forbidden") showError(err);
    }
  }));
  if (gen === state.generation) { renderRooms(); renderParticipants(); }
}

async function loadSessions(cid, gen = state.generation) {
  try {
    const r = await api("GET", `/communities/${cid}/live-sessions`);
    if (gen !== state.generation) return;
    state.allSessions = new Map(r.sessions.map((s) => [s.id, s]));
    renderSchedule();
    for (const s of r.sessions) {
      const old = state.sessions.get(s.channel_id);
      // Several sessions may share a stage over time: show the live one, else the latest.
      if (!old || s.state === "live" || (old.state !== "live" && s.starts_at >= old.starts_at)) {
        state.sessions.set(s.channel_id, s);
      }
    }
  } catch (err) { showError(err); }
}

function onSession(session) {
  if (session.community_id !== state.current) return;
  const before = state.allSessions.get(session.id);
  state.allSessions.set(session.id, session);
  const old = state.sessions.get(session.channel_id);
  if (!old || old.id === session.id || session.state === "live") {
    state.sessions.set(session.channel_id, session);
  }
  if (session.state !== "live" && session.state !== "scheduled") state.stages.delete(session.id);
  renderSchedule();
  if (session.channel_id === state.selected) {
    if (before && before.state !== session.state) {
      $("session-announce").textContent = `${session.title}: ${stateLabel(session.state).toLowerCase()}.`;
      if (session.state === "ended" && call?.channelId !== session.channel_id) setVoiceStatus("The session has ended.");
    }
    renderRoom();
    if (session.state === "live" && !state.stages.has(session.id)) loadStage(session);
  }
}

function renderSchedule() {
  $("schedule-new").hidden = !state.current || (perms() & (P.MANAGE_CHANNELS | P.ADMINISTRATOR)) === 0;
  const list = sortSchedule(state.allSessions.values());
  replaceKeepingFocus($("schedule"), list.map((s) => scheduleItem(s, state.selected)));
  $("schedule-empty").hidden = list.length > 0;
}

/** The address bar names the community and room shown, so a reload or a shared link
 * opens the same place (and the back button leaves the page, not the room). */
function syncUrl() {
  const q = new URLSearchParams();
  if (state.current) q.set("community", String(state.current));
  if (state.selected) q.set("channel", String(state.selected));
  const url = `${location.pathname}${q.toString() ? `?${q}` : ""}`;
  if (url !== `${location.pathname}${location.search}`) history.replaceState(null, "", url);
}

// ------------------------------------------------------------------ session actions

async function sessionAction(action) {
  const session = state.sessions.get(state.selected);
  if (!session) return;
  const base = `/communities/${session.community_id}/live-sessions/${session.id}`;
  try {
    if (action === "attendance") { await loadAttendance(session); return; }
    let r;
    if (action === "register") {
      const on = !state.registered.has(session.id);
      r = await api(on ? "POST" : "DELETE", `${base}/register`);
      if (on) state.registered.add(session.id); else state.registered.delete(session.id);
    } else {
      r = await api("POST", `${base}/${action}`);
    }
    onSession(r.session);
    if (action === "end" && state.attendance?.sessionId === session.id) await loadAttendance(session);
  } catch (err) { showError(err); }
}

async function loadAttendance(session) {
  const r = await api("GET", `/communities/${session.community_id}/live-sessions/${session.id}/attendance`);
  state.attendance = { sessionId: session.id, report: r };
  renderAttendance();
  $("attendance-panel").hidden = false;
  $("attendance-title").focus();
}

function renderAttendance() {
  const session = state.sessions.get(state.selected);
  const shown = state.attendance && session && state.attendance.sessionId === session.id;
  $("attendance-panel").hidden = !shown;
  $("attendance-button").setAttribute("aria-expanded", String(!!shown));
  if (shown) $("attendance-body").replaceChildren(...attendanceView(state.attendance.report, userName));
}

function renderSessionControls(session) {
  const host = isHost(session);
  const s = session.state;
  $("host-controls").hidden = !host;
  $("start-button").hidden = s !== "scheduled";
  $("cancel-button").hidden = s !== "scheduled";
  $("end-button").hidden = s !== "live";
  $("attendance-button").hidden = s === "scheduled" || s === "cancelled";
  const reg = $("register-button");
  const registered = state.registered.has(session.id);
  $("audience-controls").hidden = host || (s !== "scheduled" && s !== "live");
  reg.setAttribute("aria-pressed", String(registered));
  reg.textContent = registered ? "Registered (withdraw)" : "Register";
  renderAttendance();
}

async function serverMute(userId, muted) {
  try {
    await request("voice_server_mute", { channel_id: state.selected, user_id: userId, muted });
  } catch (err) { showError(err); }
}

// ----------------------------------------------------------------------------- rooms

function renderRooms() {
  const chans = [...(state.communities.get(state.current)?.channels.values() ?? [])]
    .sort((a, b) => (a.position ?? 0) - (b.position ?? 0) || a.id - b.id);
  $("no-rooms").hidden = chans.length > 0 || !state.current;
  replaceKeepingFocus($("room-list"), chans.map((c) => {
    const count = state.rooms.get(c.id)?.size ?? 0;
    const here = call?.channelId === c.id;
    return el("li", {},
      el("button", {
        type: "button", class: "room-link", dataTestid: "room-link", dataChannelId: String(c.id),
        dataChannelName: c.name, dataKind: c.kind,
        ariaCurrent: c.id === state.selected ? "true" : null,
      },
      voiceIcon(c.kind, "room-icon"),
      el("span", { class: "room-name", text: c.name }),
      el("span", { class: "visually-hidden", text: c.kind === "stage" ? ", stage," : ", voice room," }),
      el("span", { class: "room-count", dataTestid: "room-count", text: String(count) }),
      el("span", { class: "visually-hidden", text: ` in the room${here ? ", you are connected" : ""}` })));
  }));
}

function selectRoom(channelId) {
  state.selected = channelId;
  state.questions.clear();
  state.voted.clear();
  state.attendance = null;
  syncUrl();
  renderRooms();
  renderSchedule();
  renderRoom();
  const session = state.sessions.get(channelId);
  if (session) { loadStage(session); loadQuestions(session); }
}

function renderRoom() {
  const c = state.selected ? channel(state.selected) : null;
  $("room-title").textContent = c ? c.name : "Pick a room";
  $("room-kind").hidden = !c;
  $("room-kind").textContent = c?.kind === "stage" ? "Stage" : "Voice";
  const session = c?.kind === "stage" ? state.sessions.get(c.id) : null;
  $("session-info").hidden = !session;
  if (session) {
    $("session-title").textContent = session.title;
    // Usually the stage is named after the session: say it once on screen.
    $("session-title").classList.toggle("visually-hidden", session.title === c.name);
    $("session-state").textContent = stateLabel(session.state);
    $("session-state").dataset.state = session.state;
    $("session-description").textContent = session.description ?? "";
    $("session-details").replaceChildren(...sessionDetails(session));
    renderSessionControls(session);
    if (session.state === "live" && !state.stages.has(session.id)) loadStage(session);
    if (state.questions.size === 0) loadQuestions(session);
  }
  $("qa-panel").hidden = !session;
  $("qa-form").hidden = !session || (session.state !== "scheduled" && session.state !== "live");
  $("hands-panel").hidden = !session;
  renderControls();
  renderParticipants();
  renderStage();
  renderQuestions();
}

function renderControls() {
  const inThis = call && call.channelId === state.selected;
  $("join-button").hidden = !!inThis;
  const over = ["ended", "cancelled"].includes(state.sessions.get(state.selected)?.state);
  $("join-button").disabled = !state.selected || !!call?.joining || over;
  $("join-button").textContent = call && !inThis ? "Switch to this room" : "Join";
  $("leave-button").hidden = !call;
  const mute = $("mute-button");
  mute.disabled = !call;
  mute.setAttribute("aria-pressed", String(!!call?.selfMute));
  mute.textContent = call?.selfMute ? "Unmute" : "Mute";
  const deaf = $("deafen-button");
  deaf.disabled = !call;
  deaf.setAttribute("aria-pressed", String(!!call?.selfDeaf));
  deaf.textContent = call?.selfDeaf ? "Undeafen" : "Deafen";
  const session = state.sessions.get(state.selected);
  const stage = session ? state.stages.get(session.id) : null;
  const hand = $("hand-button");
  const onStage = stage?.speakers.includes(state.me?.id);
  hand.hidden = !session || !!onStage || session.state !== "live";
  const raised = !!stage?.hands.includes(state.me?.id);
  hand.setAttribute("aria-pressed", String(raised));
  hand.textContent = raised ? "Lower hand" : "Raise hand";
}

/** A host's action on one person: the visible verb, then (for screen readers, where the
 * row's other buttons would all read the same) whom it acts on. */
function personButton(text, userId, props) {
  return el("button", { type: "button", class: "link", dataUserId: String(userId), ...props },
    text, el("span", { class: "visually-hidden", text: `: ${userName(userId)}` }));
}

function participantRow(p, { session, stage, channelId }) {
  const speaking = state.speaking.get(channelId)?.has(p.user_id) ?? false;
  const badges = [];
  if (p.role === "listener") badges.push(["listener", "Listener"]);
  if (p.server_mute) badges.push(["server-mute", "Muted by a moderator"]);
  else if (p.self_mute) badges.push(["self-mute", "Muted"]);
  if (p.self_deaf) badges.push(["self-deaf", "Deafened"]);
  const host = session && isHost(session);
  const onStage = stage?.speakers.includes(p.user_id);
  const li = el("li", {
    class: "participant", dataTestid: "participant", dataUserId: String(p.user_id),
    dataSpeaking: String(speaking), dataRole: p.role,
  },
  el("span", { class: "speaking-dot", ariaHidden: "true" }),
  el("span", { class: "participant-name", dataTestid: "participant-name", text: userName(p.user_id) }),
  speaking ? el("span", { class: "visually-hidden", text: "speaking" }) : null,
  ...badges.map(([k, text]) => el("span", { class: `pill ${k}`, dataTestid: `badge-${k}`, text })));
  if (session && session.host_id === p.user_id) {
    li.append(el("span", { class: "pill host", dataTestid: "badge-host", text: "Host" }));
  }
  if ((perms() & (P.MUTE_MEMBERS | P.ADMINISTRATOR)) && p.user_id !== state.me?.id) {
    li.append(personButton(p.server_mute ? "Lift mute" : "Mute for everyone", p.user_id, {
      dataAction: "server-mute", dataMuted: String(!p.server_mute), dataTestid: "server-mute-button" }));
  }
  const cohost = (session?.cohost_ids ?? []).includes(p.user_id);
  if (cohost) li.append(el("span", { class: "pill host", dataTestid: "badge-cohost", text: "Co-host" }));
  const owner = session && (session.host_id === state.me?.id || (perms() & (P.MANAGE_CHANNELS | P.ADMINISTRATOR)));
  if (owner && session.state === "live" && p.user_id !== session.host_id && p.user_id !== state.me?.id) {
    li.append(personButton(cohost ? "Remove co-host" : "Make co-host", p.user_id, {
      dataAction: "cohost", dataCohost: String(!cohost), dataTestid: "cohost-button" }));
  }
  if (host && onStage && p.user_id !== session.host_id) {
    li.append(personButton("Move to audience", p.user_id, { dataAction: "demote",
      dataTestid: "demote-button" }));
  } else if (host && stage && !onStage && p.user_id !== state.me?.id) {
    li.append(personButton("Invite to speak", p.user_id, { dataAction: "promote",
      dataTestid: "promote-button" }));
  }
  return li;
}

function renderParticipants() {
  const channelId = state.selected;
  const room = channelId ? state.rooms.get(channelId) : null;
  const list = [...(room?.values() ?? [])].sort((a, b) =>
    (a.role === b.role ? 0 : a.role === "speaker" ? -1 : 1)
    || userName(a.user_id).localeCompare(userName(b.user_id)));
  const session = state.sessions.get(channelId);
  const stage = session ? state.stages.get(session.id) : null;
  replaceKeepingFocus($("participants"), list.map((p) => participantRow(p, { session, stage, channelId })));
  $("room-empty").hidden = list.length > 0 || !channelId;
}

// ----------------------------------------------------------------------------- stage

async function loadStage(session) {
  try {
    const r = await request("stage_fetch", { session_id: session.id });
    state.stages.set(session.id, r.stage);
    if (state.sessions.get(state.selected)?.id === session.id) {
      renderStage(); renderControls(); renderParticipants();
    }
  } catch (err) { showError(err); }
}

function onStage(d) {
  state.stages.set(d.session_id, { speakers: d.speakers, cohosts: d.cohosts, hands: d.hands });
  const old = [...state.sessions.values()].find((s) => s.id === d.session_id);
  const session = old ? { ...old, cohost_ids: d.cohosts } : null;
  if (session) state.sessions.set(session.channel_id, session);
  if (session?.channel_id === state.selected) {
    renderSessionControls(session); renderStage(); renderControls(); renderParticipants(); renderQuestions();
  }
}

function renderStage() {
  const session = state.sessions.get(state.selected);
  const stage = session ? state.stages.get(session.id) : null;
  const hands = stage?.hands ?? [];
  const host = isHost(session);
  replaceKeepingFocus($("hands"), hands.map((uid) => el("li", {
    class: "participant", dataTestid: "hand", dataUserId: String(uid) },
  el("span", { class: "participant-name", text: userName(uid) }),
  host ? personButton("Invite to speak", uid, { dataAction: "promote", dataTestid: "promote-button" })
    : null)));
  $("hands-empty").hidden = hands.length > 0;
}

/** A stage op on the selected session; its reply carries the new stage. */
async function stageOp(op, fields) {
  const session = state.sessions.get(state.selected);
  if (!session) return;
  try {
    const r = await request(op, { session_id: session.id, ...fields });
    onStage({ session_id: session.id, ...r.stage });
  } catch (err) { showError(err); }
}

const setSpeaker = (userId, speaker) => stageOp("stage_set_speaker", { user_id: userId, speaker });
const setCohost = (userId, cohost) => stageOp("stage_set_cohost", { user_id: userId, cohost });
const toggleHand = () => stageOp("stage_raise_hand",
  { raised: $("hand-button").getAttribute("aria-pressed") !== "true" });

// ------------------------------------------------------------------------------- Q&A

const { loadQuestions, onQuestion, renderQuestions, ask, vote, setQuestionState } = createQa({
  state, showError, userName, canModerate: canModerateQa,
  currentSession: () => state.sessions.get(state.selected),
});

// ----------------------------------------------------------------------------- media

/** The microphone with or without the browser's voice processing (a music lesson, or a
 * test tone, wants it off; a noisy room wants it on). */
function micConstraints() {
  const on = $("voice-processing").checked;
  return { audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on },
    video: false };
}

function receiveSlots() {
  return state.limits?.voice_receive_slots ?? 9;
}

async function join(channelId) {
  if (call) await leave({ quiet: true });
  const c = channel(channelId);
  call = { channelId, joining: true, selfMute: false, selfDeaf: false, serverMute: false,
    role: "speaker", pc: null, stream: null, slots: [], pending: [], sdpTaken: false };
  const me = call;
  renderControls();
  setVoiceStatus(`Joining ${c?.name ?? "the room"}…`, "connecting");
  try {
    audioCtx ??= new AudioContext();
    if (audioCtx.state === "suspended") await audioCtx.resume();
    const stream = await navigator.mediaDevices.getUserMedia(micConstraints());
    if (call !== me) { stream.getTracks().forEach((t) => t.stop()); return; }
    me.stream = stream;
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    me.pc = pc;
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendrecv", streams: [stream] });
    for (let i = 0; i < receiveSlots(); i++) pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => attachSlot(me, ev);
    pc.onicecandidate = (ev) => onLocalCandidate(me, ev.candidate);
    pc.onconnectionstatechange = () => onConnectionState(me);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (call !== me) return;
    const sdp = pc.localDescription.sdp;
    me.sdpTaken = true;
    const sent = { mute: me.selfMute, deaf: me.selfDeaf };
    const r = await request("voice_join", { channel_id: channelId, sdp,
      self_mute: sent.mute, self_deaf: sent.deaf }, { retry: false });
    if (call !== me) { pc.close(); return; }
    await pc.setRemoteDescription({ type: "answer", sdp: r.sdp });
    state.rooms.set(channelId, new Map(r.participants.map((p) => [p.user_id, p])));
    const mine = r.participants.find((p) => p.user_id === state.me.id);
    if (mine) { me.role = mine.role; me.serverMute = mine.server_mute; }
    applyMic();
    me.joining = false;
    for (const cand of me.pending.splice(0)) sendCandidate(me, cand);
    // Muted or deafened while the join was on its way: tell the server now.
    if (sent.mute !== me.selfMute || sent.deaf !== me.selfDeaf) setSelfState();
    if (pc.connectionState !== "connected") setVoiceStatus(`Connecting to ${c?.name ?? "the room"}…`, "connecting");
    else onConnectionState(me);
  } catch (err) {
    if (call === me) {
      teardown(me);
      call = null;
      setVoiceStatus(`Could not join: ${describe(err)}`, "error");
      showError(err);
    }
  }
  renderControls();
  renderRooms();
  renderParticipants();
}

function onLocalCandidate(me, candidate) {
  if (call !== me) return;
  // Candidates found before the offer's SDP was taken are in it; later ones (gathering
  // outlasted GATHER_WAIT_MS) are trickled once the worker knows us (after voice_join).
  if (!me.sdpTaken) return;
  // null: gathering finished; an empty candidate tells the worker so.
  const cand = candidate ? { candidate: candidate.candidate, sdp_mid: candidate.sdpMid,
    sdp_mline_index: candidate.sdpMLineIndex } : { candidate: "", sdp_mid: null, sdp_mline_index: null };
  if (me.joining) me.pending.push(cand);
  else sendCandidate(me, cand);
}

function sendCandidate(me, cand) {
  request("voice_ice_candidate", { channel_id: me.channelId, ...cand }, { retry: false })
    .catch((err) => { if (call === me) showError(err); });
}

function onConnectionState(me) {
  if (call !== me || !me.pc) return;
  const s = me.pc.connectionState;
  const name = channel(me.channelId)?.name ?? "the room";
  if (s === "connected") setVoiceStatus(`Connected to ${name}.`, "connected");
  else if (s === "failed") {
    setVoiceStatus(`The audio connection to ${name} failed.`, "error");
    leave({ quiet: true, status: `The audio connection to ${name} failed.` });
  } else if (s === "disconnected") setVoiceStatus(`Reconnecting audio in ${name}…`, "connecting");
}

/** A remote track arrived on a receive slot: play it, and measure it (window.hearthVoice). */
function attachSlot(me, ev) {
  if (call !== me) return;
  const index = me.pc.getTransceivers().indexOf(ev.transceiver);
  const stream = new MediaStream([ev.track]);
  const audio = el("audio", { autoplay: true, dataSlot: String(index) });
  audio.srcObject = stream;
  audio.muted = me.selfDeaf;
  $("audio-sinks").append(audio);
  audio.play().catch(() => {}); // autoplay refusals: the element plays on the next gesture
  let analyser = null;
  if (audioCtx) {
    analyser = audioCtx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    audioCtx.createMediaStreamSource(stream).connect(analyser);
  }
  me.slots.push({ index, audio, analyser, track: ev.track });
}

/** What the microphone sends follows self mute, server mute and the stage role: a
 * disabled track sends silence, so nothing leaks even before the server drops it. */
function applyMic() {
  if (!call?.stream) return;
  const live = !call.selfMute && !call.serverMute && call.role !== "listener";
  for (const t of call.stream.getAudioTracks()) t.enabled = live;
  if (call.channelId === state.selected) {
    if (call.serverMute) setVoiceStatus("A moderator muted you.", "muted");
    else if (call.role === "listener" && call.pc?.connectionState === "connected") {
      setVoiceStatus("You are listening. Raise your hand to ask to speak.", "connected");
    }
  }
}

async function setSelfState({ mute = call?.selfMute, deaf = call?.selfDeaf } = {}) {
  if (!call) return;
  call.selfMute = mute;
  call.selfDeaf = deaf;
  applyMic();
  for (const s of call.slots) s.audio.muted = deaf;
  renderControls();
  if (call.joining) return; // voice_join carries the state
  try {
    await request("voice_set_state", { channel_id: call.channelId, self_mute: mute, self_deaf: deaf });
  } catch (err) { showError(err); }
}

function teardown(me) {
  me.pc?.close();
  me.stream?.getTracks().forEach((t) => t.stop());
  for (const s of me.slots) { s.audio.srcObject = null; s.audio.remove(); }
  me.slots = [];
}

async function leave({ quiet = false, status = "Not in a room." } = {}) {
  const me = call;
  if (!me) return;
  call = null;
  teardown(me);
  setVoiceStatus(status);
  renderControls();
  renderRooms();
  try {
    await request("voice_leave", { channel_id: me.channelId }, { retry: false });
  } catch (err) {
    if (!quiet && err.code !== "disconnected") showError(err);
  }
}

function endCall(text) {
  const me = call;
  if (!me) return;
  call = null;
  teardown(me);
  setVoiceStatus(text, "error");
  renderControls();
  renderRooms();
}

async function rejoin(channelId) {
  const keep = call ? { mute: call.selfMute, deaf: call.selfDeaf } : null;
  if (call) { teardown(call); call = null; }
  await join(channelId);
  if (keep && call && (keep.mute || keep.deaf)) await setSelfState(keep);
}

// --------------------------------------------------------------------------- wiring

document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (btn && !btn.disabled) {
    const action = btn.dataset.action;
    if (action === "promote") setSpeaker(Number(btn.dataset.userId), true);
    else if (action === "demote") setSpeaker(Number(btn.dataset.userId), false);
    else if (action === "vote") vote(Number(btn.dataset.questionId));
    else if (action === "cohost") setCohost(Number(btn.dataset.userId), btn.dataset.cohost === "true");
    else if (action === "server-mute") serverMute(Number(btn.dataset.userId), btn.dataset.muted === "true");
    else if (["start", "end", "cancel", "register", "attendance"].includes(action)) sessionAction(action);
    else if (action === "open-session") {
      selectRoom(Number(btn.dataset.channelId));
      $("room-title").focus();
    }
    else if (action === "answered" || action === "dismissed") {
      setQuestionState(Number(btn.dataset.questionId), action);
    }
    return;
  }
  const room = ev.target.closest("button.room-link");
  if (room) selectRoom(Number(room.dataset.channelId));
});

$("join-button").addEventListener("click", () => { if (state.selected) join(state.selected); });
$("leave-button").addEventListener("click", () => leave());
$("mute-button").addEventListener("click", () => setSelfState({ mute: !call?.selfMute }));
$("deafen-button").addEventListener("click", () => setSelfState({ deaf: !call?.selfDeaf }));
$("hand-button").addEventListener("click", () => toggleHand());
$("community-select").addEventListener("change", (ev) => selectCommunity(Number(ev.target.value)));
$("schedule-new").addEventListener("toggle", () => {
  if ($("schedule-new").open && !$("sf-starts").value) $("sf-starts").value = nextHourLocal();
});
$("schedule-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  $("sf-error").textContent = "";
  try {
    const r = await api("POST", `/communities/${state.current}/live-sessions`, scheduleBody(form));
    form.reset();
    $("schedule-new").open = false;
    onSession(r.session);
    state.sessions.set(r.session.channel_id, r.session);
    selectRoom(r.session.channel_id);
    $("room-title").focus();
  } catch (err) { $("sf-error").textContent = describe(err); }
});
$("error-close").addEventListener("click", () => { $("error-banner").hidden = true; });
$("qa-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("qa-input");
  const text = input.value.trim();
  if (!text) return;
  input.disabled = true;
  if (await ask(text)) input.value = "";
  input.disabled = false;
  input.focus();
});
$("auth-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("auth-error").textContent = "";
  const body = { username: $("auth-username").value.trim(), password: $("auth-password").value };
  try {
    await signIn("login", body);
    $("auth-password").value = "";
    connect();
  } catch (err) {
    $("auth-error").textContent = describe(err);
  }
});
$("logout").addEventListener("click", () => {
  leave({ quiet: true });
  signOut().catch(showError); // authLost shows the form (here and in every other tab)
});
window.addEventListener("pagehide", () => { if (call) teardown(call); });
// "in 5 minutes" goes stale: refresh the relative times once a minute (focus is kept).
setInterval(() => {
  renderSchedule();
  const session = state.sessions.get(state.selected);
  if (session) $("session-details").replaceChildren(...sessionDetails(session));
}, 60_000);

function showAuth(message) {
  $("voice-view").hidden = true;
  $("auth-view").hidden = false;
  $("logout").hidden = true;
  if (message) $("auth-error").textContent = message;
}

// Debug/test hook, as on the other pages.
window.hearthVoice = {
  state, gw, measure: () => (call && audioCtx ? slotLevels(call.slots, audioCtx) : []),
  call: () => call,
  dropConnection: () => dropSocket(4000, "simulated drop"),
};

// ------------------------------------------------------------------------------ start

Object.assign(hooks, {
  hello: onHello,
  ready: onReady,
  resumed: onResumed,
  event: onEvent,
  status: setStatus,
  authLost: (message) => { if (call) endCall("Logged out."); showAuth(message); },
});
orphanErrors.report = showError;
gw.client = "hearth-voice/1";
const shell = mountShell({ page: "voice" });
resumeStoredSession().then((signedIn) => {
  if (signedIn) return;
  showAuth();
  setStatus("offline");
});
