// The thread side panel: one thread (a channel of kind "thread" whose parent is the
// channel and whose root is a message) open beside the channel, with its own history,
// its own composer, and read state kept like any channel's. Threads of the current
// channel are listed in the sidebar under it with their unread counts (app.js).

import { request } from "../gateway.js";
import { WindowedList, insertBySeq } from "./list.js";

const PAGE = 50;

export class ThreadPanel {
  /**
   * @param {HTMLElement} root the panel (an <aside>)
   * @param {object} ctx `messageNode(m)`, `showError(err)`, `markRead(channelId, seq)`,
   *   `send(channelId, content)` -> Promise<Message>, `channel(id)`, `gate(channel)`
   */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.thread = null;
    this.messages = [];
    this.hasMore = false;
    this.loadingOlder = false;
    this.title = root.querySelector("[data-role=thread-title]");
    this.listEl = root.querySelector("[data-role=thread-messages]");
    this.input = root.querySelector("[data-role=thread-input]");
    this.form = root.querySelector("[data-role=thread-composer]");
    this.notice = root.querySelector("[data-role=thread-gate]");
    this.list = new WindowedList(this.listEl, {
      items: () => this.messages,
      // A row being edited is kept; every other row is drawn afresh (threads are short).
      build: (slice) => {
        const editing = new Map([...this.listEl.querySelectorAll("li.editing")].map((li) => [li.message?.id, li]));
        return slice.map((m, i) => {
          const li = editing.get(m.id) ?? ctx.messageNode(m);
          const prev = slice[i - 1];
          li.classList.toggle("continued", !!prev && prev.author.id === m.author.id && !m.reply_to_id
            && m.created_at - prev.created_at < 5 * 60000);
          return li;
        });
      },
      onNeedOlder: () => this.loadOlder(),
      max: 100,
    });
    root.querySelector("[data-role=thread-close]").addEventListener("click", () => this.close());
    // Escape closes the panel (unless a popup inside it used the key).
    root.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !ev.defaultPrevented && !document.querySelector(".emoji-picker")) {
        this.close();
      }
    });
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const content = this.input.value.trim();
      if (!content || !this.thread) return;
      this.input.value = "";
      ctx.send(this.thread.id, content).then((m) => { if (m) this.onMessage(m); }).catch(ctx.showError);
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); this.form.requestSubmit(); }
    });
  }

  get openId() { return this.thread?.id ?? null; }

  async open(thread) {
    this.thread = thread;
    this.messages = [];
    this.hasMore = false;
    this.list.reset();
    this.root.hidden = false;
    this.root.dataset.threadId = thread.id;
    this.refreshHeader();
    this.list.render({ toBottom: true });
    try {
      const page = await request("fetch_history", { channel_id: thread.id, limit: PAGE });
      if (this.thread?.id !== thread.id) return;
      const live = this.messages;
      this.messages = page.messages;
      live.forEach((m) => this.upsert(m, false));
      this.hasMore = page.has_more;
      this.list.render({ toBottom: true });
      this.markRead();
      this.input.focus();
    } catch (err) { this.ctx.showError(err); }
  }

  close() {
    this.thread = null;
    this.messages = [];
    this.root.hidden = true;
    delete this.root.dataset.threadId;
    this.listEl.replaceChildren();
    this.ctx.closed?.();
    // Back to the conversation's composer: what opened the panel (a message's thread
    // button, a sidebar link) is re-rendered by closed() and gone.
    if (this.root.contains(document.activeElement) || document.activeElement === document.body) {
      document.getElementById("composer-input")?.focus();
    }
  }

  refreshHeader() {
    if (!this.thread) return;
    const fresh = this.ctx.channel(this.thread.id) ?? this.thread;
    this.thread = fresh;
    this.title.textContent = fresh.name;
    const gate = this.ctx.gate(fresh);
    this.input.disabled = gate.blocked;
    this.notice.textContent = gate.text;
    this.notice.hidden = !gate.blocked;
  }

  async loadOlder() {
    if (!this.hasMore || this.loadingOlder || !this.messages.length || !this.thread) return;
    this.loadingOlder = true;
    const id = this.thread.id;
    try {
      const page = await request("fetch_history", { channel_id: id, before: this.messages[0].seq, limit: PAGE });
      if (this.thread?.id !== id) return;
      const known = new Set(this.messages.map((m) => m.id));
      this.messages = [...page.messages.filter((m) => !known.has(m.id)), ...this.messages];
      this.hasMore = page.has_more;
      this.list.olderLoaded();
    } catch (err) { this.ctx.showError(err); } finally { this.loadingOlder = false; }
  }

  upsert(m, render = true) {
    insertBySeq(this.messages, m);
    if (render) this.list.render();
  }

  /** A message_create/update for the open thread. */
  onMessage(m) {
    if (m.channel_id !== this.openId) return;
    this.upsert(m);
    this.markRead();
  }

  onDelete(ids) {
    const gone = new Set(ids);
    this.messages = this.messages.filter((m) => !gone.has(m.id));
    this.list.render();
  }

  find(id) { return this.messages.find((m) => m.id === id) ?? null; }

  markRead() {
    const last = this.messages.at(-1)?.seq;
    if (this.thread && last) this.ctx.markRead(this.thread.id, last);
  }
}

/** Name a new thread after the start of its root message. */
export function threadNameFor(text) {
  const line = String(text).split("\n")[0].replace(/[<>*_`~#|[\]]/g, "").trim();
  return (line.length > 40 ? `${line.slice(0, 39)}…` : line) || "Thread";
}

