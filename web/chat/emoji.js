// The emoji picker: a searchable grid of common Unicode emoji plus the ones this browser
// used recently (localStorage, so recent emoji are per browser, not per account). The
// protocol accepts `:custom_name:` reactions, but no route lists a community's custom
// emoji yet, so the picker offers Unicode emoji only (docs/ASSUMPTIONS.md).

import { el } from "../gateway.js";

const GROUPS = [
  ["Smileys", "😀 grinning|😃 smiley|😄 smile|😁 grin|😆 laughing|😅 sweat smile|🤣 rofl|😂 joy tears|🙂 slight smile|😉 wink|😊 blush|😇 innocent|🥰 love|😍 heart eyes|🤩 star struck|😘 kiss|😋 yum|😛 tongue|😜 wink tongue|🤪 zany|🤗 hug|🤔 thinking|🤨 raised eyebrow|😐 neutral|😑 expressionless|😶 no mouth|🙄 eye roll|😏 smirk|😬 grimace|😌 relieved|😔 pensive|😴 sleeping|😷 mask|🤒 sick|🤯 mind blown|🥳 party|😎 cool sunglasses|🤓 nerd|🧐 monocle|😕 confused|😟 worried|😮 open mouth|😲 astonished|😳 flushed|🥺 pleading|😢 cry|😭 sob|😱 scream|😤 triumph|😡 angry|🤬 cursing|💀 skull|🤡 clown|👻 ghost|🤖 robot"],
  ["People", "👍 thumbs up +1|👎 thumbs down -1|👏 clap|🙌 raised hands|🙏 pray thanks|🤝 handshake|👋 wave|✌️ victory|🤞 crossed fingers|👌 ok|🤙 call me|💪 muscle|👀 eyes|🧠 brain|🫡 salute|🤷 shrug|🤦 facepalm|🙋 raising hand|💁 tipping hand"],
  ["Hearts", "❤️ heart red|🧡 orange heart|💛 yellow heart|💚 green heart|💙 blue heart|💜 purple heart|🖤 black heart|🤍 white heart|💔 broken heart|💯 hundred|💥 boom|✨ sparkles|⭐ star|🌟 glowing star|🔥 fire|⚡ zap"],
  ["Things", "🎉 tada party|🎊 confetti|🎁 gift|🏆 trophy|🥇 first medal|🎯 target|📌 pin|📎 paperclip|📚 books|📝 memo|✏️ pencil|💡 bulb idea|🔔 bell|📣 megaphone|🔗 link|🔒 lock|🔑 key|⏰ alarm|⌛ hourglass|📅 calendar|💻 laptop|📱 phone|🎧 headphones|🎮 game|☕ coffee|🍕 pizza|🍰 cake|🍪 cookie|🌈 rainbow|☀️ sun|🌙 moon|🌱 seedling|🚀 rocket|✈️ plane"],
  ["Symbols", "✅ check mark|☑️ ballot check|✔️ check|❌ cross|❓ question|❗ exclamation|⚠️ warning|🚫 no entry|➕ plus|➖ minus|➡️ right arrow|⬅️ left arrow|⬆️ up arrow|⬇️ down arrow|🔁 repeat|🆗 ok button|🆕 new|🆒 cool|🔴 red circle|🟢 green circle|🔵 blue circle"],
].map(([name, list]) => [name, list.split("|").map((entry) => {
  const [emoji, ...words] = entry.split(" ");
  return { emoji, words: words.join(" ") };
})]);

const RECENT_KEY = "hearth.recentEmoji";
const RECENT_MAX = 16;

export function recentEmoji() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) ?? "[]");
    return Array.isArray(list) ? list.filter((e) => typeof e === "string").slice(0, RECENT_MAX) : [];
  } catch { return []; }
}

export function rememberEmoji(emoji) {
  const list = [emoji, ...recentEmoji().filter((e) => e !== emoji)].slice(0, RECENT_MAX);
  try { localStorage.setItem(RECENT_KEY, JSON.stringify(list)); } catch { /* private mode */ }
}

let open = null;

export function closePicker() {
  open?.remove();
  open = null;
}

function option(emoji, title) {
  return el("button", { type: "button", class: "emoji-option", dataTestid: "emoji-option",
    dataEmoji: emoji, title: title || emoji, ariaLabel: title || emoji, text: emoji });
}

/** Open the picker next to `anchor`; `onPick(emoji)` is called once, then it closes. */
export function openPicker(anchor, onPick) {
  closePicker();
  const recent = recentEmoji();
  const search = el("input", { type: "search", class: "emoji-search", placeholder: "Search emoji",
    ariaLabel: "Search emoji", dataTestid: "emoji-search" });
  const body = el("div", { class: "emoji-body" });
  const fill = () => {
    const q = search.value.trim().toLowerCase();
    const sections = [];
    if (!q && recent.length) {
      sections.push(el("section", { dataTestid: "emoji-recent" }, el("h4", { text: "Recently used" }),
        el("div", { class: "emoji-grid" }, ...recent.map((e) => option(e, "recent")))));
    }
    for (const [name, items] of GROUPS) {
      const hits = q ? items.filter((i) => i.words.includes(q)) : items;
      if (hits.length) {
        sections.push(el("section", {}, el("h4", { text: name }),
          el("div", { class: "emoji-grid" }, ...hits.map((i) => option(i.emoji, i.words)))));
      }
    }
    body.replaceChildren(...(sections.length ? sections : [el("p", { class: "muted", text: "No emoji found" })]));
  };
  fill();
  search.addEventListener("input", fill);
  const picker = el("div", { class: "emoji-picker", role: "dialog", ariaLabel: "Pick an emoji",
    dataTestid: "emoji-picker" }, search, body);
  picker.addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-emoji]");
    if (!btn) return;
    ev.stopPropagation();
    rememberEmoji(btn.dataset.emoji);
    closePicker();
    onPick(btn.dataset.emoji);
  });
  picker.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    closePicker();
    anchor.focus();  // back where the reader was, not to the top of the page
  });
  document.body.append(picker);
  const r = anchor.getBoundingClientRect();
  const top = Math.max(8, Math.min(r.bottom + 4, window.innerHeight - picker.offsetHeight - 8));
  const left = Math.max(8, Math.min(r.right - picker.offsetWidth, window.innerWidth - picker.offsetWidth - 8));
  picker.style.top = `${top}px`;
  picker.style.left = `${left}px`;
  open = picker;
  search.focus();
  return picker;
}

document.addEventListener("mousedown", (ev) => {
  if (open && !open.contains(ev.target) && !ev.target.closest?.("[data-opens-picker]")) closePicker();
});
