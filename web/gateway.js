// Hearth connection layer shared by the chat page (app.js), the moderator console
// (mod.js) and the voice page (voice.js): REST calls and the /gateway websocket with
// resume, heartbeats, backoff and request/reply matching. One copy, so every page
// behaves the same when a token expires or the socket drops. Plain ES module, no build
// step. Tokens come from session.js (one sign-in per browser, access token in memory).
//
// A page plugs in through `hooks`: it gets `ready`/`resumed`/`event` callbacks, status
// text for its status line, and `authLost` when the session ends (expired, or signed
// out in this tab or another).

import * as session from "./session.js";

export const API = "/api/v1";

/** Page preferences (the selected community...), kept per browser. No credentials. */
export const store = {
  get: (k) => localStorage.getItem(`hearth.${k}`),
  set: (k, v) => (v == null ? localStorage.removeItem(`hearth.${k}`)
    : localStorage.setItem(`hearth.${k}`, String(v))),
};

export class HearthError extends Error {
  constructor(code, message) { super(`${code}: ${message}`); this.code = code; this.detail = message; }
}

/** What a page reacts to; every hook is optional. */
export const hooks = {
  hello: (_frame) => {},
  ready: (_frame) => {},
  resumed: () => {},
  event: (_d) => {},
  status: (_text, _kind) => {},
  authLost: (_message) => {},
};

/** Build an element: `el("button", {type: "button", dataAction: "x", text: "Go"}, child...)`.
 * `data*`/`aria*`/role/title props become attributes (dataTestid -> data-testid). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data") || k.startsWith("aria") || k === "role" || k === "title") {
      node.setAttribute(k.replace(/^data([A-Z])/, (_, c) => `data-${c.toLowerCase()}`)
        .replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v);
    } else node[k] = v;
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

export const nameOf = (user) => user?.display_name || user?.username || "someone";

// ------------------------------------------------------------------------------- REST

/** Authorization headers for a raw fetch (refreshing the token first if it is old). */
export async function authHeaders() {
  try {
    return { Authorization: `Bearer ${await session.accessToken()}` };
  } catch (err) {
    throw new HearthError(err.code ?? "invalid_token", err.detail ?? "not signed in");
  }
}

export async function api(method, path, body, { auth = true, retry = true } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) Object.assign(headers, await authHeaders());
  let res;
  try {
    res = await fetch(API + path, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new HearthError("network_error", "the server cannot be reached");
  }
  if (res.status === 401 && auth && retry && await refreshTokens()) {
    return api(method, path, body, { auth, retry: false });
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const e = data?.error ?? { code: `http_${res.status}`, message: res.statusText };
    throw new HearthError(e.code, e.message);
  }
  return data;
}

/** Sign in or create an account (`mode` "login" / "register") for every tab. */
export async function signIn(mode, body) {
  try {
    return await session.signIn(mode, body);
  } catch (err) {
    throw new HearthError(err.code, err.detail);
  }
}

/** Get a new access token once. Resolves true on success; on a refused refresh the
 * session has ended and `authLost` follows (session.js tells every listener). */
export async function refreshTokens() {
  try {
    await session.refresh();
    return true;
  } catch (err) {
    if (err.code === "network_error") setTimeout(() => refreshTokens(), 5000);
    return false;
  }
}

export async function ensureFreshToken() {
  await session.accessToken();
}

/** The current access token (for a raw fetch or a test's REST call). */
export const accessToken = () => session.accessToken();

// ---------------------------------------------------------------------------- gateway

export const gw = {
  ws: null, ready: false, seq: 0, sessionId: null, nextId: 1, requests: new Map(),
  positions: new Map(), // channel id -> newest message seq received (sent with resume)
  heartbeat: null, acked: true, attempt: 0, timer: null, stopped: true, retryAfter: null,
  client: "hearth-web/1",
};

export function connect() {
  clearTimeout(gw.timer);
  gw.stopped = false;
  hooks.status("connecting…", "connecting");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/gateway?encoding=json`);
  gw.ws = ws;
  ws.onmessage = (ev) => { if (gw.ws === ws) onFrame(JSON.parse(ev.data)); };
  ws.onclose = (ev) => { if (gw.ws === ws) onClose(ev); };
}

/** Close the socket ourselves and reconnect as after a network failure (resumable).
 * The close event would carry the code the server echoes, not ours, so act now. */
export function dropSocket(code, reason) {
  const ws = gw.ws;
  if (!ws) return;
  gw.ws = null;
  ws.close(code, reason);
  onClose({ code });
}

function sendRaw(frame) {
  if (gw.ws?.readyState === WebSocket.OPEN) gw.ws.send(JSON.stringify(frame));
}

/** One request, one ok/error reply. Requests outlive a dropped socket and are sent
 * again after resume/identify (all are idempotent; messages carry a nonce). */
export function request(op, fields, { retry = true } = {}) {
  return new Promise((resolve, reject) => {
    const id = gw.nextId++;
    const frame = { op, id, ...fields };
    gw.requests.set(id, { frame, resolve, reject, retry });
    if (gw.ready) sendRaw(frame);
  });
}

/** An error reply nobody waits for (its request was dropped). */
export const orphanErrors = { report: (_err) => {} };

function onFrame(f) {
  switch (f.op) {
    case "hello":
      hooks.hello(f);
      startHeartbeat(f.heartbeat_interval_ms);
      session.accessToken().then((token) => {
        sendRaw(gw.sessionId
          ? { op: "resume", token, session_id: gw.sessionId, seq: gw.seq, positions: resumePositions() }
          : { op: "identify", token, client: gw.client });
      }, () => {}); // not signed in any more: authLost follows
      break;
    case "ready":
      gw.sessionId = f.session_id;
      gw.seq = 0;
      gw.positions = new Map();
      for (const c of f.communities) bringChannels(c.channels);
      bringChannels(f.private_channels);
      hooks.ready(f);
      opened();
      break;
    case "resumed":
      opened();
      hooks.resumed();
      break;
    case "invalid_session": // the close (4006) follows; identify on the next connection
      gw.sessionId = null;
      gw.seq = 0;
      break;
    case "heartbeat_ack":
      gw.acked = true;
      break;
    case "reconnect":
      gw.retryAfter = f.retry_after_ms;
      break;
    case "ok":
    case "error": {
      const req = gw.requests.get(f.id);
      if (!req) { if (f.op === "error") orphanErrors.report(new HearthError(f.code, f.message)); break; }
      gw.requests.delete(f.id);
      if (f.op === "ok") req.resolve(f.data);
      else req.reject(Object.assign(new HearthError(f.code, f.message),
        { retryAfterMs: f.retry_after_ms ?? 0 }));
      break;
    }
    case "dispatch":
      // `s` grows but may jump (a resume on another node numbers its replay anew).
      if (f.s <= gw.seq) break; // already seen (replay overlap)
      gw.seq = f.s;
      if (!trackPosition(f.d)) break; // a message we have (resume without our position)
      hooks.event(f.d);
      break;
    default:
      break;
  }
}

const MAX_RESUME_POSITIONS = 1000; // limits.max_resume_positions

function bringChannels(channels) {
  for (const c of channels) if (!gw.positions.has(c.id)) gw.positions.set(c.id, c.last_seq);
}

/** Keep the per-channel positions a resume sends (exactly-once on any node); false
 * for a message_create we already have, which is dropped. */
function trackPosition(d) {
  if (d.t === "message_create") {
    const m = d.message;
    if (m.seq <= (gw.positions.get(m.channel_id) ?? -1)) return false;
    gw.positions.delete(m.channel_id); // re-inserted last: most recent first to send
    gw.positions.set(m.channel_id, m.seq);
  } else if (d.t === "channel_create" || d.t === "channel_update") {
    bringChannels([d.channel]);
  } else if (d.t === "community_available") {
    bringChannels(d.snapshot.channels);
  } else if (d.t === "channel_delete") {
    gw.positions.delete(d.channel_id);
  }
  return true;
}

/** The most recently advanced positions, within limits.max_resume_positions. */
function resumePositions() {
  const entries = [...gw.positions].slice(-MAX_RESUME_POSITIONS);
  return Object.fromEntries(entries);
}

function opened() {
  gw.ready = true;
  gw.attempt = 0;
  hooks.status("connected", "connected");
  for (const req of gw.requests.values()) sendRaw(req.frame);
}

function startHeartbeat(interval) {
  clearInterval(gw.heartbeat);
  gw.acked = true;
  gw.heartbeat = setInterval(() => {
    if (!gw.acked) { dropSocket(4000, "no heartbeat ack"); return; } // zombie: resume
    gw.acked = false;
    sendRaw({ op: "heartbeat", seq: gw.seq });
  }, interval);
}

function onClose(ev) {
  clearInterval(gw.heartbeat);
  gw.ws = null;
  gw.ready = false;
  for (const [id, req] of gw.requests) {
    if (!req.retry) { gw.requests.delete(id); req.reject(new HearthError("disconnected", "connection lost")); }
  }
  if (gw.stopped) return;
  // Not resumable: identify on the next connection.
  if ([1000, 4002, 4003, 4004, 4006].includes(ev.code)) { gw.sessionId = null; gw.seq = 0; }
  const base = Math.min(30000, 1000 * 2 ** gw.attempt++);
  let delay = gw.retryAfter ?? Math.round(base / 2 + Math.random() * base / 2);
  if (ev.code === 4006) delay = Math.round(Math.random() * 500);
  gw.retryAfter = null;
  hooks.status(`reconnecting in ${Math.ceil(delay / 1000)} s…`, "reconnecting");
  const go = () => { if (!gw.stopped) connect(); };
  gw.timer = setTimeout(() => {
    if (ev.code === 4004) refreshTokens().then((ok) => ok && go()); else go();
  }, delay);
}

/** Close the socket and fail every pending request (the session has ended). */
function stopGateway() {
  gw.stopped = true;
  clearTimeout(gw.timer);
  gw.ws?.close(1000, "logout");
  Object.assign(gw, { ws: null, ready: false, sessionId: null, seq: 0 });
  for (const req of gw.requests.values()) req.reject(new HearthError("logged_out", "logged out"));
  gw.requests.clear();
  hooks.status("offline");
}

/** Sign this browser out (or, with `everywhere`, every browser and app): every tab's
 * socket closes and each page shows its signed-out view through `authLost`. */
export async function signOut({ everywhere = false } = {}) {
  store.set("channel", null);
  try {
    await session.signOut({ everywhere });
  } catch (err) {
    throw new HearthError(err.code, err.detail);
  }
}

const SIGNED_OUT_TEXT = {
  expired: "Your session has ended; please sign in again.",
  everywhere: "You signed out everywhere.",
  signed_out: "You signed out.",
};

// Signed in in another tab: this page connects too (its `ready` hook shows it signed in).
session.on("signedIn", (_user, from) => {
  if (from === "other tab" && gw.wanted && gw.stopped && !gw.ws) connect();
});

session.on("signedOut", ({ reason, here }) => {
  stopGateway();
  hooks.authLost(here && reason === "signed_out" ? "" : SIGNED_OUT_TEXT[reason] ?? "");
});

/** Start: the browser's sign-in (session.js), then connect. Resolves false when there
 * is none (the page shows its sign-in form). */
export async function resumeStoredSession() {
  gw.wanted = true; // this page lives on the gateway (a sign-in in another tab connects it)
  hooks.status("connecting…", "connecting");
  let user = null;
  try {
    user = await session.restore();
  } catch {
    user = null;
  }
  if (!user) { hooks.status("offline"); return false; }
  connect();
  return true;
}

/** Connect after a sign-in on this page. */
export function connectSignedIn() {
  connect();
}
