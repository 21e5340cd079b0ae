// Hearth web session, shared by every page (chat, /mod, /voice, /settings and sidecar
// pages). One sign-in per browser: the refresh token lives in an HttpOnly cookie that
// no script can read (server/api_web_auth.py); this module keeps only a short-lived
// access token, in memory. A new tab or a restarted browser gets a fresh access token
// from the cookie (POST /api/v1/auth/web/refresh), so no page asks to sign in again.
//
// CSRF: every cookie route gets the header X-Hearth-CSRF with the value of the
// `hearth_csrf` cookie (double-submit); the server refuses it otherwise.
//
// Tabs: the refresh cookie rotates on every use, and presenting a used one revokes the
// whole sign-in (theft detection), so refreshes are serialized across the browser's
// tabs with the Web Locks API: the second tab sends the cookie the first one received.
// A sign-out (here or "everywhere") is told to the other tabs on a BroadcastChannel,
// and they drop their session at once.

const API = "/api/v1";
const LOCK = "hearth-session-refresh";
const EARLY_MS = 20_000; // refresh this long before the access token expires

export class SessionError extends Error {
  constructor(code, message) { super(`${code}: ${message}`); this.code = code; this.detail = message; }
}

const mem = { user: null, access: null, expiresAt: 0, timer: null, refreshing: null };
const listeners = { signedIn: new Set(), signedOut: new Set() };
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("hearth-session") : null;

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "hearth_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

async function post(path, body, { csrf = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf) headers["X-Hearth-CSRF"] = csrfToken();
  let res;
  try {
    res = await fetch(API + path, { method: "POST", headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new SessionError("network_error", "the server cannot be reached");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const e = data?.error ?? { code: `http_${res.status}`, message: res.statusText };
    throw new SessionError(e.code, e.message);
  }
  return data;
}

function adopt(reply) {
  mem.user = reply.user;
  mem.access = reply.access_token;
  mem.expiresAt = Date.now() + reply.expires_in * 1000;
  clearTimeout(mem.timer);
  mem.timer = setTimeout(() => { refresh().catch(() => {}); },
    Math.max(1000, reply.expires_in * 1000 - EARLY_MS));
  return reply.user;
}

function forget() {
  clearTimeout(mem.timer);
  Object.assign(mem, { user: null, access: null, expiresAt: 0, timer: null });
}

function withLock(fn) {
  return navigator.locks?.request ? navigator.locks.request(LOCK, fn) : fn();
}

/** The signed-in user, or null. */
export const currentUser = () => mem.user;

/** Subscribe to sign-in / sign-out (this tab's or another tab's). Returns an unsubscribe. */
export function on(event, fn) {
  listeners[event].add(fn);
  return () => listeners[event].delete(fn);
}

function emit(event, arg, from = "here") {
  for (const fn of [...listeners[event]]) {
    try { fn(arg, from); } catch (err) { console.warn("session listener failed", err); }
  }
}

/** Rotate the cookie into a new access token (one at a time across tabs). Resolves the
 * user; rejects with a SessionError (`invalid_token`: not signed in any more). */
export function refresh() {
  mem.refreshing ??= withLock(() => post("/auth/web/refresh", undefined, { csrf: true }))
    .then(adopt)
    .catch((err) => {
      if (err.code !== "network_error") {
        const was = mem.user;
        forget();
        if (was) emit("signedOut", { reason: "expired" });
      }
      throw err;
    })
    .finally(() => { mem.refreshing = null; });
  return mem.refreshing;
}

/** Start a page: the user of the browser's sign-in, or null if there is none.
 * Listeners of "signedIn" get `from` "restore" (or "other tab" when another tab signed in). */
export async function restore(from = "restore") {
  if (mem.user) return mem.user;
  if (!csrfToken()) return null; // never signed in on this browser (or signed out)
  try {
    const user = await refresh();
    emit("signedIn", user, from);
    return user;
  } catch (err) {
    if (err.code === "network_error") throw err;
    return null;
  }
}

/** A valid access token (refreshed first when it is about to expire). */
export async function accessToken() {
  if (!mem.access || mem.expiresAt - Date.now() < EARLY_MS) await refresh();
  return mem.access;
}

/** Sign in (`mode` "login") or create an account (`mode` "register"). */
export async function signIn(mode, body) {
  const user = adopt(await post(`/auth/web/${mode === "register" ? "register" : "login"}`, body));
  channel?.postMessage({ t: "signed_in" });
  emit("signedIn", user);
  return user;
}

/** Sign this browser out, or every browser and app (`everywhere`). Other tabs follow. */
export async function signOut({ everywhere = false } = {}) {
  try {
    await post(everywhere ? "/auth/web/logout-all" : "/auth/web/logout", undefined, { csrf: true });
  } finally {
    forget();
    channel?.postMessage({ t: "signed_out", everywhere });
    emit("signedOut", { reason: everywhere ? "everywhere" : "signed_out", here: true });
  }
}

if (channel) {
  channel.onmessage = (ev) => {
    if (ev.data?.t === "signed_out" && mem.user) {
      forget();
      emit("signedOut", { reason: ev.data.everywhere ? "everywhere" : "signed_out", here: false });
    } else if (ev.data?.t === "signed_in" && !mem.user) {
      restore("other tab").catch(() => {}); // tells the listeners when it succeeds
    }
  };
}
