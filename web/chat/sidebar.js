// The sidebar's channel list: each community with its channels and, under each channel,
// its open threads; then the direct messages. Unread counts (mentions first) as badges.
// Pure rendering: app.js passes what to show and handles the clicks.

import { el } from "../gateway.js";

/** Render into `root`. `o`: communities, channelsOf(communityId|null), threadsOf(id),
 * readStates, current, openThreadId, label(channel), name(channel), and optionally
 * special(channel): an element drawn instead of the button (voice and stage rooms link
 * to the voice page). */
export function renderChannelList(root, o) {
  const sections = [...o.communities]
    .sort((a, b) => a.id - b.id)
    .map((community) => [community.name, community.id, o.channelsOf(community.id)]);
  sections.push(["Direct messages", null, o.channelsOf(null)]);
  const link = (c, extra = "") => {
    const special = o.special?.(c);
    if (special) return el("li", { class: extra }, special);
    const rs = o.readStates.get(c.id);
    const active = c.id === o.current || c.id === o.openThreadId;
    const unread = !active && rs?.unread_count > 0;
    const thread = c.kind === "thread";
    return el("li", { class: extra }, el("button", { type: "button",
      class: `channel-link${thread ? " thread-link" : ""}${active ? " active" : ""}${unread ? " unread" : ""}`,
      dataTestid: thread ? "thread-link" : "channel-link", dataChannelId: c.id,
      dataChannelName: c.name, dataThread: thread ? "true" : null,
      ariaCurrent: c.id === o.current ? "page" : null },
    el("span", { class: "hash", ariaHidden: "true", text: thread ? "🧵" : o.label(c) }),
    el("span", { class: "name", text: o.name(c) || "direct message" }),
    unread ? el("span", { class: `badge${rs.mention_count ? " mention" : ""}`,
      dataTestid: "unread-badge", ariaLabel: `${rs.unread_count} unread`,
      text: String(rs.mention_count || rs.unread_count) }) : null));
  };
  root.replaceChildren(...sections.map(([name, cid, channels]) => el("section",
    { class: "community", dataTestid: cid ? "community" : "dm-list", dataCommunityId: cid ?? "" },
    el("h3", {}, name, cid ? null : el("button", { type: "button", class: "link new-group",
      dataAction: "new-group", dataTestid: "new-group-dm", title: "Start a group message", text: "+ group" })),
    el("ul", {}, ...channels.flatMap((c) => [link(c), ...o.threadsOf(c.id).map((t) => link(t, "thread-item"))]),
      !cid && !channels.length ? el("li", { class: "muted hint", text: "Start one from the member list." }) : null))));
}

