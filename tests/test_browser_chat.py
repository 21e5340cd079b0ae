"""The chat page's conversation features in headless Chromium against a real ``hearth
serve``: replies, threads, reactions with the emoji picker and who reacted, mentions
with autocomplete, DMs, presence in the member list, the hostile-markdown suite, a
10,000-message channel, and the composer of a timed-out member.

People are browser contexts (tests/test_browser.py ``Person``); whoever only needs to
set something up is a raw gateway client or a REST call. Every console error or
uncaught exception on a page fails the test; screenshots land in /tmp.
"""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
import asyncpg

from tests import test_browser as tb
from tests.helpers import GatewayClient, bearer, register

expect = tb.expect
browser = tb.browser
"""The Chromium fixture of tests/test_browser.py (same launch flags, fails without it)."""

pytestmark = tb.pytestmark
LIVE_MS = tb.LIVE_MS
PASSWORD = tb.PASSWORD
LINK_REL = "noopener noreferrer nofollow ugc"


async def signed_in(browser: Any, server: Any, username: str, name: str,
                    errors: list[str]) -> tb.Person:
    """A person registered over REST (fast) who logs in on the page."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/api/v1/auth/register", json={
                "username": username, "password": PASSWORD, "display_name": name}) as reply:
            assert reply.status == 201, await reply.text()
    person = await tb.Person.open(browser, server.url, name.lower(), errors)
    await person.login(username)
    await expect(person.tid("channel-title")).to_have_text("# general", timeout=LIVE_MS)
    return person


def member_row(person: tb.Person, username: str) -> Any:
    return person.page.locator(f'[data-testid="member"][data-user-name="{username}"]')


async def test_replies_threads_reactions_mentions_dms_and_presence(
        browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    alice = await signed_in(browser, hearth_server, "alice", "Alice", errors)
    bob = await signed_in(browser, hearth_server, "bob", "Bob", errors)

    # Presence: each sees the other online in the member list.
    await expect(member_row(alice, "bob")).to_have_attribute("data-status", "online",
                                                             timeout=LIVE_MS)
    await expect(member_row(bob, "alice")).to_have_attribute("data-status", "online",
                                                             timeout=LIVE_MS)
    await expect(alice.tid("members-online")).to_contain_text("Bob")

    # A reply: Bob answers Alice's question; both see the quote, and clicking it jumps
    # to (highlights) the original.
    await alice.send("question about **homework**")
    question = bob.message("question about homework").and_(
        bob.page.locator('[data-author="alice"]'))
    await expect(question).to_have_count(1, timeout=LIVE_MS)
    await expect(question.locator("strong")).to_have_text("homework")
    await question.hover()
    await question.get_by_test_id("reply-button").click()
    await expect(bob.tid("reply-bar")).to_contain_text("Replying to Alice")
    await bob.send("here is my answer")
    await expect(bob.tid("reply-bar")).to_be_hidden()
    answer = alice.message("here is my answer")
    await expect(answer.get_by_test_id("reply-quote")).to_contain_text(
        "question about homework", timeout=LIVE_MS)
    await expect(answer.get_by_test_id("reply-quote")).to_contain_text("Alice")
    await answer.get_by_test_id("reply-quote").click()
    original = alice.message("question about homework").and_(
        alice.page.locator('[data-author="alice"]'))
    await expect(original).to_have_class(re.compile("highlight"))

    # A mention through autocomplete: "@bo" offers Bob; Enter picks him. Bob's page shows
    # the name, never the wire token, and marks the message as mentioning him.
    await alice.tid("composer-input").press_sequentially("ping @bo", delay=20)
    option = alice.tid("autocomplete-option").filter(has_text="@Bob")
    await expect(option).to_have_count(1)
    await alice.tid("composer-input").press("Enter")
    await expect(alice.tid("composer-input")).to_have_value("ping @Bob ")
    await alice.tid("composer-input").press_sequentially("look at this", delay=5)
    await alice.tid("composer-input").press("Enter")
    pinged = bob.message("look at this")
    await expect(pinged.get_by_test_id("mention")).to_have_text("@Bob", timeout=LIVE_MS)
    await expect(pinged).to_have_class(re.compile("mentions-me"))
    await expect(pinged.get_by_test_id("message-content")).not_to_contain_text("<@")

    # A reaction picked in the emoji picker; Alice sees it and who reacted; the picker
    # remembers it as recent.
    await question.hover()
    await question.get_by_test_id("emoji-picker-button").click()
    await expect(bob.tid("emoji-picker")).to_be_visible()
    await bob.tid("emoji-search").fill("tada")
    await bob.page.locator('[data-testid="emoji-option"][data-emoji="🎉"]').click()
    await expect(bob.tid("emoji-picker")).to_have_count(0)
    mine = original
    party = mine.locator('[data-testid="reaction"][data-emoji="🎉"]')
    await expect(party.get_by_test_id("reaction-count")).to_have_text("1", timeout=LIVE_MS)
    await party.hover()
    await expect(alice.tid("reaction-users")).to_contain_text("Reacted by Bob", timeout=LIVE_MS)
    await question.hover()
    await question.get_by_test_id("emoji-picker-button").click()
    await expect(bob.tid("emoji-recent").locator('[data-emoji="🎉"]')).to_have_count(1)
    await bob.page.keyboard.press("Escape")
    await expect(bob.tid("emoji-picker")).to_have_count(0)

    # A thread off Alice's question: it opens in her side panel; Bob sees it in his
    # sidebar and on the message with an unread count, opens it, and reads live.
    await mine.hover()
    await mine.get_by_test_id("thread-button").click()
    await expect(alice.tid("thread-panel")).to_be_visible()
    await expect(alice.tid("thread-title")).to_have_text("question about homework")
    await alice.tid("thread-input").fill("first thread reply")
    await alice.tid("thread-input").press("Enter")
    await expect(alice.tid("thread-messages").get_by_test_id("message").filter(
        has_text="first thread reply")).to_have_count(1, timeout=LIVE_MS)
    thread_link = bob.page.locator('[data-testid="thread-link"]').filter(
        has_text="question about homework")
    await expect(thread_link.get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)
    await expect(question.get_by_test_id("thread-unread")).to_have_text("1")
    await alice.tid("thread-input").fill("second thread reply")
    await alice.tid("thread-input").press("Enter")
    await expect(thread_link.get_by_test_id("unread-badge")).to_have_text("2", timeout=LIVE_MS)
    await question.get_by_test_id("thread-chip").click()
    await expect(bob.tid("thread-panel")).to_be_visible()
    bob_thread = bob.tid("thread-messages").get_by_test_id("message")
    await expect(bob_thread).to_have_count(2, timeout=LIVE_MS)
    await expect(thread_link.get_by_test_id("unread-badge")).to_have_count(0)
    await expect(question.get_by_test_id("thread-unread")).to_have_count(0)
    await alice.tid("thread-input").fill("third, seen live")
    await alice.tid("thread-input").press("Enter")
    await expect(bob_thread.filter(has_text="third, seen live")).to_have_count(1, timeout=LIVE_MS)
    await expect(thread_link.get_by_test_id("unread-badge")).to_have_count(0)
    # The channel itself never showed the thread's messages.
    await expect(bob.tid("message-list").get_by_test_id("message").filter(
        has_text="first thread reply")).to_have_count(0)
    await bob.tid("thread-close").click()
    await expect(bob.tid("thread-panel")).to_be_hidden()

    # A DM, started from the member list: Alice messages Bob, who sees it in his
    # sidebar's direct messages (named after Alice), unread, and reads it.
    await member_row(alice, "bob").get_by_role("button", name="Bob").click()
    await alice.tid("message-user-button").click()
    await expect(alice.tid("channel-title")).to_have_text("@ Bob", timeout=LIVE_MS)
    await alice.send("a private hello")
    await expect(alice.message("a private hello")).to_have_count(1, timeout=LIVE_MS)
    dm = bob.tid("dm-list").get_by_test_id("channel-link").filter(has_text="Alice")
    await expect(dm.get_by_test_id("unread-badge")).to_have_text("1", timeout=LIVE_MS)
    await dm.click()
    await expect(bob.message("a private hello")).to_have_count(1, timeout=LIVE_MS)
    await expect(bob.tid("channel-title")).to_have_text("@ Alice")
    await bob.send("hello back, privately")
    await expect(alice.message("hello back, privately")).to_have_count(1, timeout=LIVE_MS)

    await alice.page.mouse.move(600, 300)
    await alice.page.screenshot(path="/tmp/hearth-chat-dm.png")
    await bob.open_channel("general")
    await bob.page.screenshot(path="/tmp/hearth-chat-features.png")

    # Bob leaves: Alice's member list (the DM's people, then #general's) shows him offline.
    await expect(member_row(alice, "bob")).to_have_attribute("data-status", "online")
    await bob.page.context.close()
    await expect(member_row(alice, "bob")).to_have_attribute("data-status", "offline",
                                                             timeout=3 * LIVE_MS)
    await alice.open_channel("general")
    await expect(member_row(alice, "bob")).to_have_attribute("data-status", "offline")
    await expect(alice.tid("members-offline")).to_contain_text("Bob")
    assert errors == []


async def test_group_dm_and_up_arrow_edits_the_last_message(
        browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    alice = await signed_in(browser, hearth_server, "alice3", "Alice", errors)
    bob = await signed_in(browser, hearth_server, "bob3", "Bob", errors)
    async with aiohttp.ClientSession() as http:
        cara = await register(http, hearth_server.url, "cara3", password=PASSWORD)
        # Cara connects and picks "do not disturb", then "idle": the list shows each.
        client = await GatewayClient.identified(http, hearth_server.ws_url, cara["access_token"])
        await expect(member_row(alice, "cara3")).to_have_attribute("data-status", "online",
                                                                   timeout=LIVE_MS)
        await client.ok("set_presence", status="dnd")
        await expect(member_row(alice, "cara3")).to_have_attribute("data-status", "dnd",
                                                                   timeout=LIVE_MS)
        await client.ok("set_presence", status="idle")
        await expect(member_row(alice, "cara3")).to_have_attribute("data-status", "idle",
                                                                   timeout=LIVE_MS)
        await expect(member_row(alice, "cara3").get_by_test_id("member-status")).to_have_text(
            "Idle")
        await client.close()
    await expect(member_row(alice, "cara3")).to_have_attribute("data-status", "offline",
                                                               timeout=LIVE_MS)

    # ↑ in the empty composer edits my last message.
    await alice.send("tpyo here")
    await expect(bob.message("tpyo here")).to_have_count(1, timeout=LIVE_MS)
    await alice.tid("composer-input").press("ArrowUp")
    await expect(alice.tid("edit-input")).to_have_value("tpyo here")
    await alice.tid("edit-input").fill("typo fixed")
    await alice.tid("edit-input").press("Enter")
    await expect(bob.message("typo fixed")).to_contain_text("(edited)", timeout=LIVE_MS)

    # "#intro" offers the channel; the message names it (the wire carries <#id>).
    await alice.tid("composer-input").press_sequentially("see #intro", delay=20)
    await expect(alice.tid("autocomplete-option").filter(has_text="#introductions")
                 ).to_have_count(1)
    await alice.tid("composer-input").press("Tab")
    await alice.tid("composer-input").press_sequentially("please", delay=5)
    await alice.tid("composer-input").press("Enter")
    named = bob.message("please").get_by_test_id("mention")
    await expect(named).to_have_text("#introductions", timeout=LIVE_MS)
    await expect(named).to_have_attribute("data-channel-id", re.compile(r"^\d+$"))
    # "@mod" offers the moderator role.
    await alice.tid("composer-input").press_sequentially("@mod", delay=20)
    await expect(alice.tid("autocomplete-option").filter(has_text="@moderator")
                 ).to_have_attribute("data-token", "<@&moderator>")
    await alice.tid("composer-input").press("Escape")
    await alice.tid("composer-input").fill("")

    # A group DM picked in the member list.
    await alice.tid("new-group-dm").click()
    await member_row(alice, "bob3").get_by_test_id("group-pick").check()
    await member_row(alice, "cara3").get_by_test_id("group-pick").check()
    await alice.tid("group-create").click()
    await expect(alice.tid("channel-title")).to_contain_text("Bob", timeout=LIVE_MS)
    await alice.send("hello both of you")
    dm = bob.tid("dm-list").get_by_test_id("channel-link").filter(has_text="Alice")
    await expect(dm).to_have_count(1, timeout=LIVE_MS)
    await dm.click()
    await expect(bob.message("hello both of you")).to_have_count(1, timeout=LIVE_MS)
    assert errors == []


# Each payload tries to run `window.__xss = 1` (or alert, which the dialog handler turns
# into a failure) or to smuggle a dangerous attribute or URL into the DOM.
HOSTILE = [
    "<script>window.__xss = 1</script>",
    "<img src=x onerror=\"window.__xss = 1\">",
    "<svg onload=\"window.__xss = 1\"><circle r=10></circle></svg>",
    "<svg><script>window.__xss = 1</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__xss = 1\">",
    "<iframe src=\"javascript:window.__xss = 1\"></iframe>",
    "<iframe srcdoc=\"<script>parent.__xss = 1</script>\"></iframe>",
    "<a href=\"javascript:window.__xss = 1\">plain html link</a>",
    "[markdown js link](javascript:window.__xss=1)",
    "[entity js link](jav&#x61;script:window.__xss=1)",
    "[tab js link](java\tscript:window.__xss=1)",
    "[spaced js link](  javascript:window.__xss=1  )",
    "[upper js link](JAVASCRIPT:window.__xss=1)",
    "<javascript:window.__xss=1>",
    "[data link](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)",
    "![data image](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9d2luZG93Ll9feHNzPTE+)",
    "![js image](javascript:window.__xss=1)",
    "[![nested](https://example.com/i.png)](javascript:window.__xss=1)",
    "[x](https://example.com \"title\\\" onmouseover=\\\"window.__xss=1\")",
    "[vb](vbscript:msgbox(1))",
    "<details open ontoggle=\"window.__xss = 1\">details</details>",
    "<a href=\"https://example.com\" onclick=\"window.__xss = 1\" "
    "style=\"position:fixed\">styled</a>",
    "<p style=\"background:url(javascript:window.__xss=1)\">styled p</p>",
    "<style>body { display: none }</style>",
    "<form action=\"javascript:window.__xss=1\"><button>go</button></form>",
    "<object data=\"javascript:window.__xss=1\"></object><embed src=\"javascript:window.__xss=1\">",
    "<base href=\"javascript:/\"><a href=\"/x\">relative</a>",
    "<<script>script>window.__xss = 1<</script>/script>",
    "<noscript><p title=\"</noscript><img src=x onerror=window.__xss=1>\">",
    "&lt;img src=x onerror=window.__xss=1&gt; &#60;script&#62;window.__xss=1&#60;/script&#62;",
    "`<img src=x onerror=\"window.__xss = 1\">` and\n"
    "```html\n<script>window.__xss = 1</script>\n```",
    "<@1 onerror=window.__xss=1> <@&admin\" onmouseover=\"window.__xss=1> "
    "<#1><img src=x onerror=window.__xss=1>",
    "<template><img src=x onerror=\"window.__xss = 1\"></template>",
    "<input autofocus onfocus=\"window.__xss = 1\">",
    "<video><source onerror=\"window.__xss = 1\"></video>"
    "<audio src=x onerror=\"window.__xss = 1\">",
    "<a id=\"hearth\" name=\"hearth\">clobber</a><form id=\"composer\"></form>",
    "**bold** _em_ `code` [safe link](https://example.com/page) https://example.org/auto",
]

DOM_AUDIT = """
() => {
  const contents = [...document.querySelectorAll('[data-testid="message-content"]')];
  const bad = [];
  for (const c of contents) {
    for (const node of c.querySelectorAll('*')) {
      const tag = node.tagName.toLowerCase();
      if (['script', 'iframe', 'img', 'svg', 'math', 'style', 'form', 'object', 'embed',
           'input', 'video', 'audio', 'source', 'template', 'base', 'noscript', 'details',
           'button'].includes(tag)) bad.push('tag ' + tag);
      for (const a of node.attributes) {
        const name = a.name.toLowerCase();
        const risky = ['style', 'src', 'srcdoc', 'action', 'formaction', 'id', 'name',
                       'data', 'class'].includes(name) && tag !== 'span';
        if (name.startsWith('on') || risky) bad.push(tag + ' @' + name);
      }
      if (tag === 'a') {
        const href = node.getAttribute('href');
        if (href !== null && !/^(https?:|mailto:)/i.test(href)) bad.push('href ' + href);
        const rel = node.getAttribute('rel');
        if (href !== null && rel !== '""" + LINK_REL + """') bad.push('rel ' + rel);
        if (href !== null && node.getAttribute('target') !== '_blank') bad.push('target');
      }
    }
  }
  return { bad, count: contents.length, xss: window.__xss ?? null,
           links: contents.flatMap((c) => [...c.querySelectorAll('a[href]')].map((a) => a.href)) };
}
"""


async def test_hostile_markdown_never_runs_or_reaches_the_dom(
        browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    dialogs: list[str] = []
    victim = await signed_in(browser, hearth_server, "victim", "Victim", errors)
    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    victim.page.on("dialog", on_dialog)
    async with aiohttp.ClientSession() as http:
        reply = await register(http, hearth_server.url, "mallory", password=PASSWORD)
        client = await GatewayClient.identified(http, hearth_server.ws_url, reply["access_token"])
        general = client.channel_named("general")
        sent = [await client.ok("send_message", channel_id=general["id"], content=content,
                                nonce=f"hostile-{i}") for i, content in enumerate(HOSTILE)]
        # A reply quoting a hostile message: the quote is text too.
        await client.ok("send_message", channel_id=general["id"], content="quoting it",
                        reply_to_id=sent[1]["message"]["id"], nonce="hostile-reply")
        await client.close()

    messages = victim.page.locator('[data-testid="message"]:not([data-pending])')
    await expect(messages).to_have_count(len(HOSTILE) + 1, timeout=LIVE_MS)
    await expect(victim.message("quoting it").get_by_test_id("reply-quote")).to_contain_text(
        "<img src=x onerror=")
    # Hover every message and link (mouseover payloads), and reload once so the history
    # path renders them too.
    for i in range(len(HOSTILE) + 1):
        await messages.nth(i).hover()
    for link in await victim.page.locator('[data-testid="message-content"] a[href]').all():
        await link.hover()
    audit = await victim.page.evaluate(DOM_AUDIT)
    assert audit["bad"] == [], audit["bad"]
    assert audit["xss"] is None
    # The harmless parts still render: text shown as text, safe markdown as markup.
    await expect(messages.first.get_by_test_id("message-content")).to_have_text(
        "<script>window.__xss = 1</script>")
    safe = victim.message("bold em code safe link")
    await expect(safe.locator("strong")).to_have_text("bold")
    await expect(safe.locator("code")).to_have_text("code")
    await expect(safe.locator('a[href="https://example.com/page"]')).to_have_attribute(
        "rel", LINK_REL)
    await expect(safe.locator('a[href="https://example.org/auto"]')).to_have_attribute(
        "target", "_blank")
    code = victim.page.locator('[data-testid="message-content"] p > code')
    await expect(code.first).to_have_text('<img src=x onerror="window.__xss = 1">')
    await expect(victim.page.locator('[data-testid="message-content"] pre code')).to_have_text(
        "<script>window.__xss = 1</script>")
    await victim.page.reload()
    await victim.connected()
    await expect(messages).to_have_count(len(HOSTILE) + 1, timeout=LIVE_MS)
    audit = await victim.page.evaluate(DOM_AUDIT)
    assert audit["bad"] == [] and audit["xss"] is None, audit
    assert all(link.startswith(("https:", "http:", "mailto:")) for link in audit["links"])
    # The page itself is intact (no clobbering of the test hook or the composer).
    assert await victim.page.evaluate("typeof window.hearth.dropConnection") == "function"
    await victim.send("still works")
    await expect(victim.message("still works")).to_have_count(1, timeout=LIVE_MS)
    await victim.page.screenshot(path="/tmp/hearth-chat-hostile.png", full_page=True)
    assert dialogs == []
    assert errors == []


SEEDED = 10_000
MAX_NODES = 130
"""At most this many message rows in the DOM (the window is 120, plus pending rows)."""


async def test_ten_thousand_messages_scroll_back_with_a_bounded_dom(
        browser: Any, hearth_server: Any) -> None:
    async with aiohttp.ClientSession() as http:
        writer = await register(http, hearth_server.url, "writer", password=PASSWORD)
        reply = await register(http, hearth_server.url, "reader", password=PASSWORD)
        client = await GatewayClient.identified(http, hearth_server.ws_url, reply["access_token"])
        general = client.channel_named("general")
        conn = await asyncpg.connect(hearth_server.database_url)
        try:
            async with conn.transaction():
                base = await conn.fetchval(
                    "SELECT last_seq FROM channels WHERE id = $1 FOR UPDATE", general["id"])
                await conn.execute(
                    "INSERT INTO messages (channel_id, seq, author_id, content, created_at) "
                    "SELECT $1, $2 + g, $3, 'bulk ' || lpad(g::text, 5, '0'), "
                    "now() - (($4 - g) * interval '20 seconds') "
                    "FROM generate_series(1, $4) g",
                    general["id"], base, writer["user"]["id"], SEEDED)
                await conn.execute("UPDATE channels SET last_seq = $2 WHERE id = $1",
                                   general["id"], base + SEEDED)
        finally:
            await conn.close()
        # Read up to 5,000 messages before the end: the divider and "jump to first unread"
        # far back (the page loads the run around it rather than 100 pages).
        await client.ok("mark_read", channel_id=general["id"], seq=base + SEEDED - 5_000)
        await client.close()

    errors: list[str] = []
    reader = await tb.Person.open(browser, hearth_server.url, "reader", errors)
    await reader.login("reader")
    await expect(reader.message("bulk 10000")).to_have_count(1, timeout=LIVE_MS)
    rows = reader.page.locator('[data-testid="message"]')

    # The first unread is far back: the jump bar offers it and finds it; reading on
    # downwards pages newer history in; "jump to latest" comes back to the end.
    await expect(reader.tid("jump-unread")).to_be_visible()
    await reader.tid("jump-unread").click()
    await expect(reader.tid("new-messages-divider")).to_be_in_viewport(timeout=LIVE_MS)
    await expect(reader.message("bulk 05001")).to_have_class(re.compile("highlight"))
    await expect(reader.message("bulk 10000")).to_have_count(0)
    for _ in range(40):
        if await reader.message("bulk 05200").count():
            break
        await reader.tid("message-list").evaluate("list => { list.scrollTop = list.scrollHeight; }")
        await reader.page.wait_for_function(
            """() => { const l = document.querySelector('[data-testid="message-list"]');
                       return l.scrollHeight - l.scrollTop - l.clientHeight > 5; }""",
            timeout=LIVE_MS)
    await expect(reader.message("bulk 05200")).to_have_count(1)
    assert await rows.count() <= MAX_NODES
    await reader.tid("jump-latest").click()
    await expect(reader.message("bulk 10000")).to_be_in_viewport(timeout=LIVE_MS)

    # Scroll back 1,000 messages, page by page: the message at the top of the list when
    # it reaches the top stays in view after each slide or load, and the DOM never
    # holds more than MAX_NODES rows.
    list_handle = reader.tid("message-list")
    timings: list[float] = []
    oldest_seen = 10_000
    while oldest_seen > 9_000:
        top = await list_handle.evaluate("""list => {
            const row = list.querySelector('[data-testid="message"]');
            list.scrollTop = 0;
            return row.dataset.key;
        }""")
        started = time.monotonic()
        await reader.page.wait_for_function(
            """([key]) => {
                const list = document.querySelector('[data-testid="message-list"]');
                const first = list.querySelector('[data-testid="message"]');
                return first && first.dataset.key !== key && list.scrollTop > 0;
            }""", arg=[top], timeout=LIVE_MS)
        timings.append(time.monotonic() - started)
        # The row that was at the top is still on screen (the position was kept).
        await expect(reader.page.locator(f'[data-key="{top}"]')).to_be_in_viewport()
        count = await rows.count()
        assert count <= MAX_NODES, count
        first = await rows.first.inner_text()
        oldest_seen = int(re.search(r"bulk (\d{5})", first).group(1))  # type: ignore[union-attr]
    total_nodes = await reader.page.evaluate("document.querySelectorAll('*').length")
    assert total_nodes < 4_000, total_nodes
    assert max(timings) < 3.0, timings
    await reader.page.screenshot(path="/tmp/hearth-chat-10k.png")
    print(f"\n10k channel: {len(timings)} steps back to #{oldest_seen}, "
          f"median {sorted(timings)[len(timings) // 2] * 1000:.0f} ms, "
          f"max {max(timings) * 1000:.0f} ms, {total_nodes} DOM nodes")

    # Back to the newest with the jump bar; the window follows new messages again.
    await reader.tid("jump-latest").click()
    await expect(reader.message("bulk 10000")).to_be_in_viewport()
    await reader.send("after the scroll")
    await expect(reader.message("after the scroll")).to_be_in_viewport(timeout=LIVE_MS)
    assert await rows.count() <= MAX_NODES
    assert errors == []


async def test_timed_out_member_sees_why_and_how_long(browser: Any, hearth_server: Any) -> None:
    errors: list[str] = []
    async with aiohttp.ClientSession() as http:
        owner = await register(http, hearth_server.url, "olga", password=PASSWORD)
        async with http.post(f"{hearth_server.url}/api/v1/communities", json={"name": "Club"},
                             headers=bearer(owner["access_token"])) as reply:
            assert reply.status == 201, await reply.text()
            club = await reply.json()
        community_id = club["community"]["id"]
        async with http.post(f"{hearth_server.url}/api/v1/communities/{community_id}/invites",
                             json={}, headers=bearer(owner["access_token"])) as reply:
            code = (await reply.json())["code"]
        member = await register(http, hearth_server.url, "tim", password=PASSWORD)
        async with http.post(f"{hearth_server.url}/api/v1/invites/{code}/join",
                             headers=bearer(member["access_token"])) as reply:
            assert reply.status == 200, await reply.text()
        mod = await GatewayClient.identified(http, hearth_server.ws_url, owner["access_token"])

        tim = await tb.Person.open(browser, hearth_server.url, "tim", errors)
        await tim.login("tim")
        club_general = tim.page.locator(
            f'[data-testid="community"][data-community-id="{community_id}"] '
            '[data-testid="channel-link"][data-channel-name="general"]')
        await club_general.click()
        await expect(tim.tid("composer-input")).to_be_enabled()

        await mod.ok("timeout_member", community_id=community_id, user_id=member["user"]["id"],
                     duration_s=600, reason="cool down")
        gate = tim.tid("composer-gate")
        await expect(gate).to_contain_text("You are timed out in Club", timeout=LIVE_MS)
        await expect(gate).to_contain_text("Reason: cool down")
        await expect(gate).to_contain_text(re.compile(r"post again in (9 min \d+|10 min 0) s"))
        await expect(tim.tid("composer-input")).to_be_disabled()
        await expect(tim.tid("send-button")).to_be_disabled()
        before = await gate.inner_text()
        await expect(gate).not_to_have_text(before, timeout=3_000)  # the time left ticks
        await tim.page.screenshot(path="/tmp/hearth-chat-timeout.png")

        # After a reload the page knows at once (ready carries the running timeout): the
        # composer opens closed, with the time left.
        await tim.page.reload()
        await tim.connected()
        await club_general.click()
        await expect(gate).to_contain_text(re.compile(r"post again in (9 min \d+|10 min 0) s"),
                                           timeout=LIVE_MS)
        await expect(tim.tid("composer-input")).to_be_disabled()

        # Lifted: the composer opens again. Then the channel is locked: closed, with why.
        await mod.ok("remove_timeout", community_id=community_id, user_id=member["user"]["id"])
        await expect(tim.tid("composer-input")).to_be_enabled(timeout=LIVE_MS)
        await expect(gate).to_be_hidden()
        channel_id = int(await club_general.get_attribute("data-channel-id") or 0)
        await mod.ok("set_channel_locked", channel_id=channel_id, locked=True)
        await expect(gate).to_have_text("This channel is locked: only moderators can post here.",
                                        timeout=LIVE_MS)
        await expect(tim.tid("composer-input")).to_be_disabled()
        await mod.ok("set_channel_locked", channel_id=channel_id, locked=False)
        await expect(tim.tid("composer-input")).to_be_enabled(timeout=LIVE_MS)
        await mod.close()
    assert errors == []
