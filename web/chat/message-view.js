// How one message looks: its row (author, time, markdown content, reply quote, thread
// chip, reactions, hover actions), the optimistic row of a message being sent, and the
// run of rows for a window of the list (grouping by author, the "new messages"
// divider). The state stays in app.js; `bindMessageView` hands it over once.

import { el, nameOf, request } from "../gateway.js";
import { errorText } from "./error-texts.js";
import { plainText, renderMarkdown } from "./markdown.js";
import { rememberUser, userById } from "./members.js";

const QUICK_EMOJI = "👍";

/** What the views read: set once by app.js (`state`, `threads()`, `threadOfMessage`,
 * `canManageMessages`, `listEl`, `namesVersion()`, `showError`). */
const ctx = {};
export function bindMessageView(context) { Object.assign(ctx, context); }

export const hue = (id) => (Number(id) * 67) % 360;

// Icon paths from Material Design Icons (Apache-2.0); SVG, so no emoji font is needed.
const ICONS = {
  thumb: "M1 21h4V9H1v12zm22-11a2 2 0 0 0-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10a2 2 0 0 0 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
  edit: "M3 17.25V21h3.75L17.81 9.94l-3.75-3.75L3 17.25zM20.71 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z",
  trash: "M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z",
  flag: "M14.4 6 14 4H5v17h2v-7h5.6l.4 2h7V6z",
  smile: "M11.99 2C6.47 2 2 6.48 2 12s4.47 10 9.99 10C17.52 22 22 17.52 22 12S17.52 2 11.99 2zM12 20c-4.42 0-8-3.58-8-8s3.58-8 8-8 8 3.58 8 8-3.58 8-8 8zm3.5-9c.83 0 1.5-.67 1.5-1.5S16.33 8 15.5 8 14 8.67 14 9.5s.67 1.5 1.5 1.5zm-7 0c.83 0 1.5-.67 1.5-1.5S9.33 8 8.5 8 7 8.67 7 9.5 7.67 11 8.5 11zm3.5 6.5c2.33 0 4.31-1.46 5.11-3.5H6.89c.8 2.04 2.78 3.5 5.11 3.5z",
  reply: "M10 9V5l-7 7 7 7v-4.1c5 0 8.5 1.6 11 5.1-1-5-4-10-11-11z",
  thread: "M21 6h-2v9H6v2c0 .55.45 1 1 1h11l4 4V7c0-.55-.45-1-1-1zm-4 6V3c0-.55-.45-1-1-1H3c-.55 0-1 .45-1 1v14l4-4h10c.55 0 1-.45 1-1z",
};
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

export const mentionCtx = () => ({
  user: (id) => userById(id),
  channel: (id) => ctx.state.channels.get(id) ?? null,
  meId: ctx.state.me?.id,
});

export function replyQuote(m) {
  const original = ctx.state.messages.find((x) => x.id === m.reply_to_id) ?? ctx.threads().find(m.reply_to_id);
  const text = original ? plainText(original.content, mentionCtx()).replace(/[*_~`>#]+/g, "")
    .replace(/\s+/g, " ").trim() : "Original message";
  return el("button", { type: "button", class: "reply-quote", dataAction: "jump-reply",
    dataTestid: "reply-quote", dataReplyTo: m.reply_to_id, title: "Jump to the original message" },
  el("span", { class: "reply-author", text: original ? nameOf(original.author) : "" }),
  el("span", { class: "reply-text", text: text.length > 120 ? `${text.slice(0, 119)}…` : text }));
}

export function threadButton(m) {
  const thread = ctx.threadOfMessage(m.id);
  if (!thread) return null;
  const rs = ctx.state.readStates.get(thread.id);
  const unread = rs?.unread_count > 0 && thread.id !== ctx.threads().openId ? rs.unread_count : 0;
  return el("button", { type: "button", class: "thread-chip", dataAction: "open-thread",
    dataThreadId: thread.id, dataTestid: "thread-chip" },
  `🧵 ${thread.name}`, unread ? el("span", { class: "badge", dataTestid: "thread-unread",
    ariaLabel: `${unread} unread in thread`, text: String(unread) }) : null);
}

export function messageNode(m) {
  const own = m.author.id === ctx.state.me?.id;
  const manage = !own && ctx.canManageMessages(m.channel_id);
  const ch = ctx.state.channels.get(m.channel_id);
  const canThread = ch && (ch.kind === "text" || ch.kind === "announcement") && !ctx.threadOfMessage(m.id);
  const time = new Date(m.created_at);
  const content = el("div", { class: "content", dataTestid: "message-content" });
  content.append(renderMarkdown(m.content, mentionCtx()));
  const mentionsMe = m.mention_everyone || m.mention_user_ids?.includes(ctx.state.me?.id);
  const li = el("li", { class: `message${own ? " own" : ""}${mentionsMe ? " mentions-me" : ""}`,
    dataTestid: "message", dataKey: `m${m.id}`, dataSeq: m.seq, dataId: m.id,
    dataAuthor: m.author.username },
  m.reply_to_id ? replyQuote(m) : null,
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(m.author)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("button", { type: "button", class: "author link", dataTestid: "message-author",
      dataAction: "profile", dataUserId: m.author.id, text: nameOf(m.author) }),
    el("time", { dateTime: time.toISOString(), title: time.toLocaleString(),
      text: time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }),
    m.edited_at ? el("span", { class: "edited muted", text: "(edited)" }) : null),
  content,
  el("div", { class: "reactions" }, ...m.reactions.map((r) => {
    const mine = ctx.state.myReactions.has(`${m.id}:${r.emoji}`);
    return el("button", { type: "button", class: `reaction${mine ? " mine" : ""}`,
      dataTestid: "reaction", dataAction: "react", dataEmoji: r.emoji,
      ariaPressed: String(mine), ariaLabel: `${r.emoji} ${r.count}` },
    `${r.emoji} `, el("span", { class: "count", dataTestid: "reaction-count", text: String(r.count) }));
  })),
  m.channel_id === ctx.state.current ? threadButton(m) : null,
  el("div", { class: "actions" },
    el("button", { type: "button", class: "icon", dataAction: "react", dataEmoji: QUICK_EMOJI,
      dataTestid: "react-button", ariaLabel: "React with thumbs up", title: "React" }, icon("thumb")),
    el("button", { type: "button", class: "icon", dataAction: "pick-reaction", dataOpensPicker: "true",
      dataTestid: "emoji-picker-button", ariaLabel: "Add a reaction", title: "Add a reaction" }, icon("smile")),
    m.channel_id === ctx.state.current ? el("button", { type: "button", class: "icon", dataAction: "reply",
      dataTestid: "reply-button", ariaLabel: "Reply", title: "Reply" }, icon("reply")) : null,
    canThread ? el("button", { type: "button", class: "icon", dataAction: "start-thread",
      dataTestid: "thread-button", ariaLabel: "Start a thread", title: "Start a thread" }, icon("thread")) : null,
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
  li.renderKey = renderKey(m);
  return li;
}

/** What a rendered message depends on besides itself: names, my reactions, its thread. */
export function renderKey(m) {
  const thread = ctx.threadOfMessage(m.id);
  const rs = thread ? ctx.state.readStates.get(thread.id) : null;
  return `${ctx.namesVersion()}|${[...m.reactions].map((r) => ctx.state.myReactions.has(`${m.id}:${r.emoji}`)).join()}`
    + `|${thread?.id ?? ""}:${rs?.unread_count ?? 0}:${ctx.threads().openId === thread?.id}`;
}

export function pendingNode(p) {
  const li = el("li", { class: `message own pending${p.error ? " failed" : ""}`,
    dataTestid: "message", dataKey: `p${p.nonce}`, dataPending: "true" },
  el("span", { class: "avatar", ariaHidden: "true", text: nameOf(ctx.state.me)[0].toUpperCase() }),
  el("div", { class: "meta" },
    el("span", { class: "author", text: nameOf(ctx.state.me) }),
    el("span", { class: "muted", dataTestid: "message-status", dataErrorCode: p.error?.code,
      text: p.error ? `not sent — ${errorText(p.error)}` : "sending…" }),
    p.error ? el("button", { type: "button", class: "link", dataAction: "retry",
      dataNonce: p.nonce, dataTestid: "retry-button", text: "Retry" }) : null,
    p.error ? el("button", { type: "button", class: "link", dataAction: "discard",
      dataNonce: p.nonce, dataTestid: "discard-button", text: "Discard" }) : null),
  el("div", { class: "content", dataTestid: "message-content", text: p.content }));
  li.style.setProperty("--hue", hue(ctx.state.me?.id ?? 0));
  return li;
}

const GROUP_MS = 5 * 60000;

/** The seq of the first message from someone else after the read mark, if any. */
export function firstUnreadSeq() {
  if (ctx.state.dividerSeq == null) return null;
  return ctx.state.messages.find((m) => m.seq > ctx.state.dividerSeq && m.author.id !== ctx.state.me?.id)?.seq ?? null;
}
const divider = el("li", { class: "new-divider", dataKey: "divider", dataTestid: "new-messages-divider",
  role: "separator" }, el("span", { text: "New messages" }));

/** The nodes of a window of messages: reused when unchanged, grouped by author. */
export function buildNodes(slice, { atEnd, start }) {
  const list = ctx.listEl;
  const existing = new Map([...list.children].map((li) => [li.dataset.key, li]));
  const wanted = [];
  let prev = start > 0 ? ctx.state.messages[start - 1] : null;
  const firstUnread = firstUnreadSeq();
  for (const m of slice) {
    if (m.seq === firstUnread) {
      wanted.push(divider);
      prev = null;
    }
    let li = existing.get(`m${m.id}`);
    if (!li || ((li.message !== m || li.renderKey !== renderKey(m)) && !li.classList.contains("editing"))) {
      li = messageNode(m);
    }
    li.classList.toggle("continued", !!prev && prev.author.id === m.author.id && !m.reply_to_id
      && m.created_at - prev.created_at < GROUP_MS);
    prev = m;
    wanted.push(li);
  }
  if (atEnd) {
    for (const p of ctx.state.pending.values()) {
      if (p.channel_id === ctx.state.current) wanted.push(existing.get(`p${p.nonce}`)?.pendingOf === p
        && !p.error ? existing.get(`p${p.nonce}`) : Object.assign(pendingNode(p), { pendingOf: p }));
    }
  }
  if (!wanted.length && ctx.state.current) {
    wanted.push(el("li", { class: "empty muted", dataKey: "empty",
      text: ctx.state.loaded ? "No messages yet — say hello!" : "Loading…" }));
  }
  return wanted;
}

/** Who reacted with an emoji: asked when the pointer rests on a reaction. */
export async function showReactors(btn, m) {
  const emoji = btn.dataset.emoji;
  document.querySelector(".reactors")?.remove();
  try {
    const { users } = await request("fetch_reactions", { channel_id: m.channel_id, message_id: m.id, emoji });
    users.forEach(rememberUser);
    const mine = users.some((u) => u.id === ctx.state.me?.id);
    const key = `${m.id}:${emoji}`;
    if (mine !== ctx.state.myReactions.has(key)) {
      if (mine) ctx.state.myReactions.add(key); else ctx.state.myReactions.delete(key);
    }
    if (!btn.isConnected || !btn.matches(":hover")) return;
    const names = users.map((u) => (u.id === ctx.state.me?.id ? "you" : nameOf(u)));
    const pop = el("div", { class: "reactors", role: "tooltip", dataTestid: "reaction-users" },
      el("span", { class: "reactors-emoji", text: emoji }),
      el("span", { text: names.length ? `Reacted by ${names.join(", ")}` : "No reactions" }));
    document.body.append(pop);
    const r = btn.getBoundingClientRect();
    pop.style.left = `${Math.max(8, r.left)}px`;
    pop.style.top = `${Math.max(8, r.top - pop.offsetHeight - 6)}px`;
    btn.addEventListener("mouseleave", () => pop.remove(), { once: true });
  } catch (err) { ctx.showError(err); }
}
