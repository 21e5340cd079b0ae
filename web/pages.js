// The page registry: every page of the web client declares itself here, and the shared
// header (shell.js) builds its navigation from this list. A sidecar page (courses,
// billing, analytics, engagement, bots, search, uploads...) plugs in with one entry:
//
//   { id: "courses", title: "Courses", href: "/courses", order: 50,
//     visible: (ctx) => ctx.community != null }
//
// `href` gets `?community=<id>` appended when a community is selected. `visible(ctx)`
// decides per community; ctx = { community: {id, name, role, permissions} | null,
// bits(mask): whether the member holds any bit of mask here }. Pages not yet served by
// this server (a sidecar that is switched off) should not be listed. See docs/web-style.md.

export const PERMS = {
  MANAGE_MESSAGES: 1 << 10, TIMEOUT_MEMBERS: 1 << 11, KICK_MEMBERS: 1 << 12,
  BAN_MEMBERS: 1 << 13, MANAGE_CHANNELS: 1 << 14, MANAGE_ROLES: 1 << 15,
  VIEW_AUDIT_LOG: 1 << 16, MODERATE: 1 << 17, MANAGE_AUTOMOD: 1 << 18,
  MANAGE_COMMUNITY: 1 << 19, MANAGE_COURSES: 1 << 23, ADMINISTRATOR: 1 << 30,
};

const MOD_BITS = PERMS.MANAGE_MESSAGES | PERMS.TIMEOUT_MEMBERS | PERMS.KICK_MEMBERS
  | PERMS.BAN_MEMBERS | PERMS.VIEW_AUDIT_LOG | PERMS.MODERATE | PERMS.ADMINISTRATOR;
const SETTINGS_BITS = PERMS.MANAGE_COMMUNITY | PERMS.MANAGE_CHANNELS | PERMS.MANAGE_ROLES
  | PERMS.MANAGE_AUTOMOD | PERMS.ADMINISTRATOR;

export const PAGES = [
  { id: "chat", title: "Chat", href: "/", order: 10, visible: () => true },
  { id: "voice", title: "Voice & Stage", href: "/voice", order: 20, visible: () => true },
  { id: "mod", title: "Moderation", href: "/mod", order: 30,
    visible: (ctx) => ctx.bits(MOD_BITS) },
  { id: "settings", title: "Settings", href: "/settings", order: 40,
    visible: (ctx) => ctx.bits(SETTINGS_BITS) },
  { id: "courses", title: "Courses", href: "/courses", order: 50,
    visible: (ctx) => ctx.community != null },
];

/** Add a page at run time (a sidecar's module may call this before the shell mounts). */
export function registerPage(page) {
  if (!PAGES.some((p) => p.id === page.id)) PAGES.push({ order: 100, visible: () => true, ...page });
}
