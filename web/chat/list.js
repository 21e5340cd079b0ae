// A windowed message list: of a channel's loaded messages (it may hold ten thousand and
// more) only a bounded run of at most `max` is in the DOM. Scrolling near the top or the
// bottom of that run slides it by `step` messages; when the run already starts at the
// oldest loaded message, `onNeedOlder` asks for another page of history.
//
// Why a sliding run rather than fixed-height virtual rows: chat rows vary in height
// (markdown, code blocks, replies, reactions), and a run of real nodes lets the browser
// lay them out while the scroll position is kept by re-anchoring on a visible message.

/** First index whose seq is >= seq. */
function lowerBound(items, seq) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].seq < seq) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/** Put `m` into `items` (sorted by seq) in place: replaced if its id is there, else
 * inserted at its seq (usually the end, so the search runs from there). */
export function insertBySeq(items, m) {
  const i = items.findIndex((x) => x.id === m.id);
  if (i >= 0) { items[i] = m; return; }
  let at = items.length;
  while (at > 0 && items[at - 1].seq > m.seq) at--;
  items.splice(at, 0, m);
}

export class WindowedList {
  /**
   * @param {HTMLElement} container the scrolling list element
   * @param {object} o `items()` (sorted by seq), `build(slice, {atEnd, start})` -> nodes
   *   with `dataset.key`, `onNeedOlder()`, `onChange({follow, nearBottom})`
   */
  constructor(container, o) {
    this.el = container;
    this.items = o.items;
    this.build = o.build;
    this.onNeedOlder = o.onNeedOlder ?? (() => {});
    this.onNeedNewer = o.onNeedNewer ?? (() => {});
    this.onChange = o.onChange ?? (() => {});
    this.max = o.max ?? 120;
    this.step = o.step ?? 40;
    this.edge = o.edge ?? 400;
    this.reset();
    let queued = false;
    container.addEventListener("scroll", () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; this.onScroll(); });
    }, { passive: true });
  }

  /** A new channel: the window follows the newest messages. */
  reset() {
    this.from = null; // seq of the first rendered message
    this.to = null; // seq of the last rendered one, when not following the end
    this.follow = true; // the window includes the newest loaded message
    this.start = 0;
    this.end = 0;
  }

  distanceFromBottom() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight;
  }

  /** [start, end) of the items to render, trimming the side the reader is not at. */
  compute(items, keep) {
    const n = items.length;
    let start = this.from == null ? Math.max(0, n - this.max) : lowerBound(items, this.from);
    let end = this.follow ? n : Math.min(n, lowerBound(items, this.to + 1));
    if (end < start) end = start;
    if (end - start > this.max) {
      if (keep === "bottom") start = end - this.max; else end = start + this.max;
    }
    this.follow = end >= n;
    this.start = start;
    this.end = end;
    this.from = items[start]?.seq ?? null;
    this.to = this.follow ? null : items[end - 1]?.seq ?? null;
    return [start, end];
  }

  /** The first node at least partly visible, and its distance from the list's top. */
  anchor() {
    const top = this.el.getBoundingClientRect().top;
    for (const node of this.el.children) {
      const r = node.getBoundingClientRect();
      if (r.bottom > top + 1 && node.dataset.key) return { key: node.dataset.key, offset: r.top - top };
    }
    return null;
  }

  /**
   * Render the window. `toBottom`: show the newest; otherwise a reader at the bottom
   * stays there (unless `stay`: newer history was appended below them) and any other
   * reader keeps the message they were looking at in place.
   */
  render({ toBottom = false, keep = null, stay = false } = {}) {
    const list = this.el;
    const atBottom = !stay && this.follow && this.distanceFromBottom() < 60;
    if (toBottom) { this.follow = true; this.from = null; }
    const items = this.items();
    const [start, end] = this.compute(items, keep ?? (toBottom || atBottom ? "bottom" : "top"));
    const anchor = toBottom || atBottom ? null : this.anchor();
    const wanted = this.build(items.slice(start, end), { atEnd: this.follow, start });
    const keys = new Set(wanted.map((n) => n.dataset.key));
    for (const node of [...list.children]) if (!keys.has(node.dataset.key)) node.remove();
    wanted.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
    });
    while (list.children.length > wanted.length) list.lastElementChild.remove();
    if (toBottom || atBottom) list.scrollTop = list.scrollHeight;
    else if (anchor) {
      const node = [...list.children].find((c) => c.dataset.key === anchor.key);
      if (node) {
        const offset = node.getBoundingClientRect().top - list.getBoundingClientRect().top;
        list.scrollTop += offset - anchor.offset;
      }
    }
    this.onChange({ follow: this.follow, nearBottom: this.follow && this.distanceFromBottom() < 200 });
  }

  onScroll() {
    const items = this.items();
    const list = this.el;
    if (list.scrollTop < this.edge) {
      if (this.start > 0) {
        const start = Math.max(0, this.start - this.step);
        this.from = items[start].seq;
        if (this.end - start > this.max) {
          this.follow = false;
          this.to = items[start + this.max - 1].seq;
        }
        this.render({ keep: "top" });
      } else this.onNeedOlder();
    } else if (!this.follow && this.distanceFromBottom() < this.edge) {
      const end = Math.min(items.length, this.end + this.step);
      if (end >= items.length) this.follow = true; else this.to = items[end - 1].seq;
      this.from = items[Math.max(this.start, end - this.max)]?.seq ?? null;
      this.render({ keep: "bottom", stay: true });
    } else if (this.follow && this.distanceFromBottom() < this.edge) {
      this.onNeedNewer();
      this.onChange({ follow: this.follow, nearBottom: this.distanceFromBottom() < 200 });
    } else {
      this.onChange({ follow: this.follow, nearBottom: this.follow && this.distanceFromBottom() < 200 });
    }
  }

  /** Look at the edges again without a scroll event: a reader resting at an edge after
   * a page arrived sends none, and the window must still slide on. */
  recheck() {
    requestAnimationFrame(() => this.onScroll());
  }

  /** Older messages were prepended: extend the window upwards to show them. */
  olderLoaded() {
    const items = this.items();
    const start = Math.max(0, lowerBound(items, this.from ?? 0) - this.step);
    this.from = items[start]?.seq ?? null;
    this.render({ keep: "top" });
  }

  /** Newer messages were appended below a reader who jumped back: show them. */
  newerLoaded() {
    this.render({ keep: "top", stay: true });
    this.recheck();
  }

  /** Centre the window on the message with this seq and return its node. */
  reveal(seq) {
    const items = this.items();
    const i = lowerBound(items, seq);
    const start = Math.max(0, i - Math.floor(this.max / 2));
    const end = Math.min(items.length, start + this.max);
    this.from = items[start]?.seq ?? null;
    this.follow = end >= items.length;
    this.to = this.follow ? null : items[end - 1].seq;
    this.render({ keep: "top" });
    return [...this.el.children].find((c) => Number(c.dataset.seq) === seq) ?? null;
  }

  isRendered(seq) {
    const items = this.items();
    const i = lowerBound(items, seq);
    return i >= this.start && i < this.end && items[i]?.seq === seq;
  }
}
