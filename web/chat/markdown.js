// Message markdown: parsed by marked, sanitised by DOMPurify (both vendored, see
// web/vendor/README.md), then mentions turned into names. Returns DOM nodes, never an
// HTML string for the caller to assign, so nothing else re-parses sanitised markup.
//
// Why this order: marked makes HTML from untrusted text, so its output is untrusted too;
// DOMPurify with a strict allow-list is the boundary. Raw HTML in the source is escaped
// by marked's renderer first so it reads as text ("<b>" shows as <b>, not bold), and
// mentions travel through the parser as private-use placeholders so markdown cannot
// split or rewrite them; they are replaced by DOM-built elements after sanitising.

import { Marked } from "../vendor/marked.esm.js";
import createDOMPurify from "../vendor/purify.es.js";

const LINK_REL = "noopener noreferrer nofollow ugc";
const OPEN = "\uE000";
const CLOSE = "\uE001";
const PLACEHOLDER = /\uE000(\d+)\uE001/g;
const MENTION = /<@(\d{1,16})>|<@&(owner|admin|moderator|member)>|<#(\d{1,16})>|@(everyone)\b/g;

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    // Raw HTML in a message is shown as the text it is.
    html: (token) => (token.block ? `<p>${escapeHtml(token.text ?? token.raw ?? "")}</p>`
      : escapeHtml(token.text ?? token.raw ?? "")),
    // No images in chat (tracking pixels, huge files): a markdown image is a link to it.
    image: (token) => `<a href="${escapeHtml(token.href ?? "")}">${escapeHtml(token.text || token.href || "image")}</a>`,
  },
});

const purify = createDOMPurify(window);
export const SANITIZE_CONFIG = Object.freeze({
  ALLOWED_TAGS: ["a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td",
    "th", "thead", "tr", "ul"],
  ALLOWED_ATTR: ["href", "title"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  FORBID_TAGS: ["style", "script", "iframe", "form", "input", "img", "svg", "math", "object",
    "embed", "template"],
  FORBID_ATTR: ["style", "class", "id", "name", "srcset", "src", "action", "formaction"],
  KEEP_CONTENT: true,
  RETURN_DOM_FRAGMENT: true,
});
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", LINK_REL);
    }
  }
});
// target/rel are set by the hook above, after the attribute allow-list ran.

/** The sanitised fragment of a message text, with placeholders standing for mentions. */
function parse(content) {
  const tokens = [];
  const text = String(content).replace(/[\uE000\uE001]/g, "").replace(MENTION, (raw, user, role, channel, all) => {
    tokens.push({ raw, user, role, channel, all });
    return `${OPEN}${tokens.length - 1}${CLOSE}`;
  });
  const html = marked.parse(text, { async: false });
  let fragment = purify.sanitize(html, SANITIZE_CONFIG);
  if (typeof fragment === "string") { // markup-free input may come back as a string
    const text = fragment;
    fragment = document.createDocumentFragment();
    fragment.append(text);
  }
  return { fragment, tokens };
}

const cache = new Map(); // content -> {fragment, tokens}; sanitised once, cloned per render
const CACHE_MAX = 2000;

function mentionNode(token, ctx) {
  const span = document.createElement("span");
  span.className = "mention";
  span.dataset.testid = "mention";
  if (token.user) {
    const user = ctx.user?.(Number(token.user));
    span.textContent = `@${user ? (user.display_name || user.username) : "unknown user"}`;
    span.dataset.userId = token.user;
    if (Number(token.user) === ctx.meId) span.classList.add("mention-me");
  } else if (token.role) {
    span.textContent = `@${token.role}`;
    span.dataset.role = token.role;
  } else if (token.channel) {
    const ch = ctx.channel?.(Number(token.channel));
    span.textContent = `#${ch ? ch.name : "unknown channel"}`;
    span.className = "mention channel-mention";
    span.dataset.channelId = token.channel;
  } else {
    span.textContent = `@${token.all}`;
    span.classList.add("everyone");
  }
  return span;
}

/** Replace placeholders in text nodes: by a mention element, or inside code by the
 * original characters (code shows what was typed). */
function placeMentions(root, tokens, ctx) {
  if (!tokens.length) return;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const texts = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) if (n.data.includes(OPEN)) texts.push(n);
  for (const node of texts) {
    const inCode = !!node.parentElement?.closest("code, pre");
    const parts = [];
    let last = 0;
    for (const match of node.data.matchAll(PLACEHOLDER)) {
      parts.push(node.data.slice(last, match.index));
      const token = tokens[Number(match[1])];
      parts.push(!token ? "" : inCode ? token.raw : mentionNode(token, ctx));
      last = match.index + match[0].length;
    }
    parts.push(node.data.slice(last));
    node.replaceWith(...parts.filter((p) => p !== ""));
  }
}

/** A message's content as DOM nodes (a fragment). ``ctx``: ``user(id)``, ``channel(id)``
 * and ``meId``, to name mentions. */
export function renderMarkdown(content, ctx = {}) {
  let parsed = cache.get(content);
  if (!parsed) {
    parsed = parse(content);
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value);
    cache.set(content, parsed);
  }
  const fragment = parsed.fragment.cloneNode(true);
  placeMentions(fragment, parsed.tokens, ctx);
  return fragment;
}

/** Plain text of a message for quotes and previews (mentions named, markdown kept). */
export function plainText(content, ctx = {}) {
  return String(content).replace(MENTION, (raw, user, role, channel, all) => {
    if (user) { const u = ctx.user?.(Number(user)); return `@${u ? (u.display_name || u.username) : "unknown user"}`; }
    if (role) return `@${role}`;
    if (channel) { const c = ctx.channel?.(Number(channel)); return `#${c ? c.name : "unknown channel"}`; }
    return `@${all}`;
  });
}

export const LINK_REL_VALUE = LINK_REL;
