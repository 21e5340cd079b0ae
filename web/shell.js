// The shared header of every page (chat, voice & stage, moderation, settings, sidecar
// pages): the community switcher, the navigation built from the page registry
// (pages.js), and the user menu (who is signed in, sign out, sign out everywhere).
// Styles: shell.css; conventions: docs/web-style.md.
//
// A page calls `mountShell({ page: "voice", onCommunity })` once; `onCommunity(id)` is
// called when the person picks another community (without it the shell reloads the
// page with ?community=<id>). The page tells the shell what it shows with
// `shell.setCommunity(id)` and asks it to re-read the communities (`shell.refresh()`)
// after a join or a role change. Signing out goes through session.js, which tells every
// tab; each page then shows its own signed-out view.

import * as session from "./session.js";
import { friendlyError } from "./errors.js";
import { PAGES } from "./pages.js";

const API = "/api/v1";
const THEME_KEY = "hearth.theme";
const THEMES = { system: "System", light: "Light", dark: "Dark" };

/** The reader's colour theme: "system" follows prefers-color-scheme (style.css's
 * light-dark() tokens do that on their own); "light"/"dark" pin it on <html>. */
function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t in THEMES ? t : "system";
  } catch {
    return "system";  // storage refused (private mode): follow the system
  }
}

function applyTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

applyTheme(storedTheme());

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

const LOGO = "M13.5.67s.74 2.65.74 4.8c0 2.06-1.35 3.73-3.41 3.73-2.07 0-3.63-1.67-3.63-3.73l.03-.36C5.21 7.51 4 10.62 4 14c0 4.42 3.58 8 8 8s8-3.58 8-8C20 8.61 17.41 3.8 13.5.67z";

function logo() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "shell-logo");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", LOGO);
  svg.append(path);
  return svg;
}

export function mountShell({ page, onCommunity = null } = {}) {
  const state = { communities: [], current: Number(new URLSearchParams(location.search)
    .get("community")) || null };

  const select = h("select", { id: "shell-community", "data-testid": "shell-community",
    "aria-label": "Community" });
  const links = h("ul", { class: "shell-links", "data-testid": "shell-nav" });
  const name = h("span", { class: "shell-user-name", "data-testid": "shell-user-name" });
  const menuButton = h("button", { type: "button", class: "shell-user", "aria-haspopup": "menu",
    "aria-expanded": "false", "aria-controls": "shell-user-menu",
    "data-testid": "user-menu-button" }, name);
  const who = h("p", { class: "shell-menu-who", "data-testid": "user-menu-who" });
  const menuError = h("p", { class: "shell-menu-error", role: "alert" });
  const signOut = (everywhere) => async () => {
    menuError.textContent = "";
    try {
      await session.signOut({ everywhere });
    } catch (err) {
      menuError.textContent = friendlyError(err);
    }
    closeMenu();
  };
  const themeItem = h("button", { type: "button", role: "menuitem", class: "shell-menu-item",
    "data-testid": "theme-toggle", onclick: () => {
      const order = Object.keys(THEMES);
      const next = order[(order.indexOf(storedTheme()) + 1) % order.length];
      try { localStorage.setItem(THEME_KEY, next); } catch { /* this tab only */ }
      applyTheme(next);
      showTheme();
    } });
  const showTheme = () => { themeItem.textContent = `Theme: ${THEMES[storedTheme()]}`; };
  showTheme();
  const menu = h("div", { id: "shell-user-menu", class: "shell-menu", role: "menu",
    "data-testid": "user-menu", hidden: true },
  who,
  themeItem,
  h("button", { type: "button", role: "menuitem", class: "shell-menu-item",
    "data-testid": "sign-out", onclick: signOut(false) }, "Sign out"),
  h("button", { type: "button", role: "menuitem", class: "shell-menu-item",
    "data-testid": "sign-out-everywhere", onclick: signOut(true),
    title: "Signs out every browser and app, on every device" }, "Sign out everywhere"),
  menuError);
  const userBox = h("div", { class: "shell-user-box", hidden: true }, menuButton, menu);
  const nav = h("nav", { class: "shell", "aria-label": "Hearth", "data-testid": "shell" },
    h("a", { href: "/", class: "shell-brand" }, logo(), h("span", { text: "Hearth" })),
    select, links, h("span", { class: "shell-spacer" }), userBox);
  document.body.prepend(nav);
  // Pages size their full-height views with --shell-h; the header is taller when it
  // wraps on a narrow screen, so it publishes its real height.
  const publishHeight = () => document.documentElement.style.setProperty(
    "--shell-h", `${Math.ceil(nav.getBoundingClientRect().height)}px`);
  new ResizeObserver(publishHeight).observe(nav);
  publishHeight();

  function closeMenu() {
    menu.hidden = true;
    menuButton.setAttribute("aria-expanded", "false");
  }
  menuButton.addEventListener("click", () => {
    const open = menu.hidden;
    menu.hidden = !open;
    menuButton.setAttribute("aria-expanded", String(open));
    if (open) menu.querySelector("[role=menuitem]").focus();
  });
  menu.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { closeMenu(); menuButton.focus(); return; }
    // A menu moves with the arrow keys (WAI-ARIA menu pattern); Tab still works too.
    const items = [...menu.querySelectorAll("[role=menuitem]")];
    const at = items.indexOf(document.activeElement);
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    items[(to + items.length) % items.length].focus();
  });
  document.addEventListener("click", (ev) => { if (!userBox.contains(ev.target)) closeMenu(); });

  select.addEventListener("change", () => {
    const id = Number(select.value);
    state.current = id;
    renderLinks();
    if (onCommunity) onCommunity(id);
    else location.search = `?community=${id}`;
  });

  function current() {
    return state.communities.find((c) => c.community.id === state.current)
      ?? state.communities[0] ?? null;
  }

  function renderLinks() {
    const here = current();
    const ctx = {
      community: here ? { ...here.community, role: here.role, permissions: here.permissions } : null,
      bits: (mask) => here != null && ((here.permissions ?? 0) & mask) !== 0,
    };
    const items = [...PAGES].sort((a, b) => a.order - b.order).filter((p) => p.visible(ctx));
    links.replaceChildren(...items.map((p) => {
      const href = here && p.id !== "chat" ? `${p.href}?community=${here.community.id}` : p.href;
      return h("li", {}, h("a", { href, "data-testid": `nav-${p.id}`,
        "aria-current": p.id === page ? "page" : null }, p.title));
    }));
  }

  function renderCommunities() {
    select.replaceChildren(...state.communities.map((c) => h("option",
      { value: String(c.community.id) }, c.community.name)));
    select.hidden = state.communities.length === 0;
    const here = current();
    if (here) select.value = String(here.community.id);
  }

  function renderUser() {
    const user = session.currentUser();
    userBox.hidden = !user;
    select.hidden = !user || state.communities.length === 0;
    links.hidden = !user;
    name.textContent = user ? (user.display_name || user.username) : "";
    who.textContent = user ? `Signed in as ${user.display_name || user.username} (@${user.username})` : "";
    if (!user) closeMenu();
  }

  async function refresh() {
    renderUser();
    if (!session.currentUser()) return;
    try {
      const token = await session.accessToken();
      const res = await fetch(`${API}/communities`, { headers: { Authorization: `Bearer ${token}` } });
      if (res.ok) state.communities = (await res.json()).communities;
    } catch {
      // the page itself reports connection trouble; the header keeps what it had
    }
    renderCommunities();
    renderLinks();
    renderUser();
  }

  session.on("signedIn", () => refresh());
  session.on("signedOut", () => { state.communities = []; renderCommunities(); renderUser(); });
  renderUser();
  renderLinks();

  return {
    refresh,
    setCommunity(id) {
      if (id === state.current) return;
      state.current = id;
      // One the header has not read yet (just created or joined): read them again.
      if (id && !state.communities.some((c) => c.community.id === id)) { refresh(); return; }
      renderCommunities();
      renderLinks();
    },
    get communities() { return state.communities; },
  };
}
