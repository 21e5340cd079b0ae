// History paging of the current channel: older pages as the reader scrolls up, the run
// around a far-back message after a jump (then newer pages as they scroll down), and
// the jumps themselves (to a reply's original, to the first unread, to the newest).
// The loaded run lives in app.js's state; `bindHistory` hands it over once.

import { request } from "../gateway.js";
import { insertBySeq } from "./list.js";
import { rememberUser } from "./members.js";
import { firstUnreadSeq } from "./message-view.js";

export const PAGE = 50;

/** `state`, `list` (the WindowedList), `showError`, `showNotice`, `selectChannel(id)`,
 * `renderMessages(opts)`. */
const ctx = {};
export function bindHistory(context) { Object.assign(ctx, context); }

export async function loadOlder() {
  if (!ctx.state.hasMore || ctx.state.loadingOlder || !ctx.state.messages.length) return false;
  ctx.state.loadingOlder = true;
  const id = ctx.state.current;
  try {
    const page = await request("fetch_history",
      { channel_id: id, before: ctx.state.messages[0].seq, limit: PAGE });
    if (id !== ctx.state.current) return false;
    const known = new Set(ctx.state.messages.map((m) => m.id));
    ctx.state.messages = [...page.messages.filter((m) => !known.has(m.id)), ...ctx.state.messages];
    page.messages.forEach((m) => rememberUser(m.author));
    ctx.state.hasMore = page.has_more;
    ctx.list.olderLoaded();
    return true;
  } catch (err) { ctx.showError(err); return false; } finally { ctx.state.loadingOlder = false; }
}

const MAX_SEEK_PAGES = 40;
/** Load older pages until `found()` holds (a reply's original, the first unread), at
 * most MAX_SEEK_PAGES pages (2,000 messages) back. */
export async function seek(found) {
  for (let i = 0; i < MAX_SEEK_PAGES && !found(); i++) {
    if (!ctx.state.hasMore) break;
    if (ctx.state.loadingOlder) { await new Promise((r) => setTimeout(r, 50)); continue; }
    if (!await loadOlder()) break;
  }
  return found();
}

function flash(li) {
  if (!li) return;
  li.scrollIntoView({ block: "center" });
  li.classList.add("highlight");
  setTimeout(() => li.classList.remove("highlight"), 1600);
}

export async function jumpToMessage(messageId) {
  const byId = () => ctx.state.messages.find((x) => x.id === messageId);
  if (!await seek(byId)) { ctx.showNotice("That message is too far back to jump to."); return; }
  flash(ctx.list.reveal(byId().seq));
}

const NEAR_PAGES = 6;
export async function jumpToFirstUnread() {
  const after = ctx.state.dividerSeq;
  if (after == null) return;
  const oldest = ctx.state.messages[0]?.seq ?? 0;
  if (ctx.state.hasMore && oldest - after > NEAR_PAGES * PAGE) {
    await loadAround(after + 1); // far back: load the run around it instead of every page
  } else {
    await seek(() => (ctx.state.messages[0]?.seq ?? 0) <= after + 1 || !ctx.state.hasMore);
  }
  const seq = firstUnreadSeq();
  if (seq != null) flash(ctx.list.reveal(seq));
}

/** Replace the loaded run by a page around `seq` (older and newer pages then load as
 * the reader scrolls); live messages wait until the run reaches the newest again. */
export async function loadAround(seq) {
  const id = ctx.state.current;
  try {
    const page = await request("fetch_history", { channel_id: id, around: seq, limit: PAGE });
    if (id !== ctx.state.current || !page.messages.length) return;
    page.messages.forEach((m) => rememberUser(m.author));
    ctx.state.messages = page.messages;
    ctx.state.hasMore = page.messages[0].seq > 1;
    ctx.state.hasNewer = page.messages.at(-1).seq < (ctx.state.channels.get(id)?.last_seq ?? 0);
    ctx.list.reset();
    ctx.list.from = page.messages[0].seq;
    ctx.list.render({ keep: "top", stay: true });
  } catch (err) { ctx.showError(err); }
}

export async function loadNewer() {
  if (!ctx.state.hasNewer || ctx.state.loadingNewer || !ctx.state.messages.length) return;
  ctx.state.loadingNewer = true;
  const id = ctx.state.current;
  try {
    const page = await request("fetch_history",
      { channel_id: id, after: ctx.state.messages.at(-1).seq, limit: PAGE });
    if (id !== ctx.state.current) return;
    page.messages.forEach((m) => { rememberUser(m.author); insertBySeq(ctx.state.messages, m); });
    ctx.state.hasNewer = page.has_more;
    ctx.list.newerLoaded();
  } catch (err) { ctx.showError(err); } finally { ctx.state.loadingNewer = false; }
}

/** Back to the newest: scroll down, or reload the newest page after a far jump. */
export function jumpToLatest() {
  if (ctx.state.hasNewer) ctx.selectChannel(ctx.state.current);
  else ctx.renderMessages({ toBottom: true });
}

