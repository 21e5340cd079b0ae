// Hearth connection layer shared by the chat page (app.js) and the moderator console
// (mod.js): tokens, REST calls, and the /gateway websocket with resume, heartbeats,
// backoff and request/reply matching. One copy, so both pages behave the same when a
// token expires or the socket drops. Plain ES module, no build step.
//
// A page plugs in through `hooks`: it gets `ready`/`resumed`/`event` callbacks, status
// text for its status line, and `authLost` when the session cannot be refreshed.

export const API = "/api/v1";

export const store = {
  get: (k) => sessionStorage.getItem(`hearth.${k}`),
  set: (k, v) => (v == null ? sessionStorage.removeItem(`hearth.${k}`)
    : sessionStorage.setItem(`hearth.${k}`, String(v))),
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
  await ensureFreshToken();
  return { Authorization: `Bearer ${store.get("access")}` };
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

let refreshTimer = null;
let refreshing = null;

export function saveTokens(reply) {
  store.set("access", reply.access_token);
  store.set("refresh", reply.refresh_token);
  store.set("expires_at", Date.now() + reply.expires_in * 1000);
  scheduleRefresh();
}

export function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const left = Number(store.get("expires_at") || 0) - Date.now();
  refreshTimer = setTimeout(() => refreshTokens(), Math.max(1000, left * 0.8));
}

/** Rotate the token pair once (concurrent callers share it). Resolves true on success. */
export function refreshTokens() {
  refreshing ??= (async () => {
    const token = store.get("refresh");
    if (!token) return false;
    try {
      saveTokens(await api("POST", "/auth/refresh", { refresh_token: token }, { auth: false }));
      return true;
    } catch (err) {
      if (err.code === "network_error") { setTimeout(() => refreshTokens(), 5000); return false; }
      hooks.authLost("Your session has expired; please log in again.");
      return false;
    }
  })().finally(() => { refreshing = null; });
  return refreshing;
}

export async function ensureFreshToken() {
  if (Number(store.get("expires_at") || 0) - Date.now() < 15000) await refreshTokens();
}

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
      ensureFreshToken().then(() => {
        const token = store.get("access");
        sendRaw(gw.sessionId
          ? { op: "resume", token, session_id: gw.sessionId, seq: gw.seq, positions: resumePositions() }
          : { op: "identify", token, client: gw.client });
      });
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

/** Forget the tokens, revoke the refresh token, close the socket and fail every
 * pending request. The page then shows its logged-out view. */
export function signOut() {
  const refresh = store.get("refresh");
  if (refresh) api("POST", "/auth/logout", { refresh_token: refresh }, { auth: false }).catch(() => {});
  for (const k of ["access", "refresh", "expires_at", "channel"]) store.set(k, null);
  clearTimeout(refreshTimer);
  gw.stopped = true;
  clearTimeout(gw.timer);
  gw.ws?.close(1000, "logout");
  Object.assign(gw, { ws: null, ready: false, sessionId: null, seq: 0 });
  for (const req of gw.requests.values()) req.reject(new HearthError("logged_out", "logged out"));
  gw.requests.clear();
  hooks.status("offline");
}

/** Start: connect with the stored tokens. False when there are none (log in first). */
export function resumeStoredSession() {
  if (!store.get("refresh")) return false;
  hooks.status("connecting…", "connecting");
  scheduleRefresh();
  connect();
  return true;
}
