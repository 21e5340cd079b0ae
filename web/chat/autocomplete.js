// @ and # autocomplete for a textarea. Typing "@al" offers members, roles and @everyone;
// "#ge" offers channels. Picking one writes the readable name ("@Alice") into the text
// and remembers which wire token it stands for; `toWire` swaps the names for the tokens
// the server parses (<@ID>, <@&role>, <#ID>) when the message is sent.

import { el } from "../gateway.js";

const TRIGGER = /(^|[\s(])([@#])([^\s@#]{0,32})$/;

export class Autocomplete {
  /**
   * @param {HTMLTextAreaElement} input
   * @param {(kind: "@"|"#", query: string) => {label: string, detail?: string, text: string, token: string}[]} source
   */
  constructor(input, source) {
    this.input = input;
    this.source = source;
    this.tokens = new Map(); // "@Alice" -> "<@2>"
    this.options = [];
    this.active = 0;
    this.box = el("ul", { class: "autocomplete", role: "listbox", dataTestid: "autocomplete", hidden: true });
    input.parentElement.append(this.box);
    input.addEventListener("input", () => this.update());
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
    input.addEventListener("keydown", (ev) => this.onKey(ev), true);
    this.box.addEventListener("mousedown", (ev) => {
      const li = ev.target.closest("[data-index]");
      if (!li) return;
      ev.preventDefault();
      this.pick(Number(li.dataset.index));
    });
  }

  get isOpen() { return !this.box.hidden; }

  close() { this.box.hidden = true; this.options = []; }

  match() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const m = TRIGGER.exec(before);
    return m ? { kind: m[2], query: m[3], at: before.length - m[3].length - 1 } : null;
  }

  update() {
    const m = this.match();
    this.options = m ? this.source(m.kind, m.query) : [];
    if (!this.options.length) { this.close(); return; }
    this.active = 0;
    this.draw();
  }

  draw() {
    this.box.replaceChildren(...this.options.map((o, i) => el("li", {
      role: "option", class: `option${i === this.active ? " active" : ""}`, dataIndex: i,
      ariaSelected: String(i === this.active), dataTestid: "autocomplete-option", dataToken: o.token },
    el("span", { text: o.label }), o.detail ? el("span", { class: "muted", text: ` ${o.detail}` }) : null)));
    this.box.hidden = false;
  }

  onKey(ev) {
    if (!this.isOpen) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      ev.stopImmediatePropagation();
      const n = this.options.length;
      this.active = (this.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.draw();
    } else if (ev.key === "Enter" || ev.key === "Tab") {
      ev.preventDefault();
      ev.stopImmediatePropagation();
      this.pick(this.active);
    } else if (ev.key === "Escape") {
      ev.stopImmediatePropagation();
      this.close();
    }
  }

  pick(i) {
    const o = this.options[i];
    const m = this.match();
    if (!o || !m) { this.close(); return; }
    const value = this.input.value;
    const caret = this.input.selectionStart;
    const insert = `${o.text} `;
    this.input.value = value.slice(0, m.at) + insert + value.slice(caret);
    const at = m.at + insert.length;
    this.input.setSelectionRange(at, at);
    this.tokens.set(o.text, o.token);
    this.close();
    this.input.focus();
  }

  /** The text as sent: picked names become their tokens (longest names first). */
  toWire(text) {
    let out = text;
    for (const name of [...this.tokens.keys()].sort((a, b) => b.length - a.length)) {
      out = out.split(name).join(this.tokens.get(name));
    }
    this.tokens.clear();
    return out;
  }
}

const FIXED_ROLES = ["everyone", "owner", "admin", "moderator", "member"];

/** The options for "@query" (members, then fixed roles and @everyone in a community)
 * or "#query" (channels). `o`: channel, channels (to offer), members(query) -> users. */
export function mentionOptions(kind, query, o) {
  const q = query.toLowerCase();
  if (kind === "#") {
    return o.channels.filter((c) => c.name.toLowerCase().startsWith(q))
      .slice(0, 8).map((c) => ({ label: `#${c.name}`, text: `#${c.name}`, token: `<#${c.id}>` }));
  }
  const name = (u) => u.display_name || u.username;
  const options = o.members(query).map((u) => ({ label: `@${name(u)}`, detail: u.username,
    text: `@${name(u)}`, token: `<@${u.id}>` }));
  if (o.channel?.community_id) {
    for (const r of FIXED_ROLES.filter((role) => role.startsWith(q))) {
      options.push(r === "everyone"
        ? { label: "@everyone", detail: "notify everyone", text: "@everyone", token: "@everyone" }
        : { label: `@${r}`, detail: "role", text: `@${r}`, token: `<@&${r}>` });
    }
  }
  return options.slice(0, 10);
}
