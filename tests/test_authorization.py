"""Every operation, tried by someone who does not belong, is refused (and leaks nothing).

Actors: an outsider (not in the community), a member of the community who is not listed
in its private channel, and (for DMs) anyone but the two people in it. Targets: a public
channel, a private channel, a DM, and a thread in each. A channel one cannot see is
always ``not_found`` (its existence is not revealed); a visible one where the role is
too low is ``forbidden``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.helpers import GatewayClient, bearer, register


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _post(http: aiohttp.ClientSession, url: str, token: str,
                body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, headers=bearer(token), json=body) as reply:
        return reply.status, (await reply.json() if reply.status != 204 else None)


class World:
    """A community with a public channel, a private one and a DM, each with a message
    and a thread, plus the people who must not reach them."""

    owner: dict[str, Any]
    insider: dict[str, Any]
    member: dict[str, Any]
    outsider: dict[str, Any]
    community_id: int
    targets: dict[str, dict[str, int]]


async def build_world(http: aiohttp.ClientSession, server: RunningServer) -> World:
    w = World()
    w.owner, w.insider, w.member, w.outsider = [await register(http, server.url)
                                                for _ in range(4)]
    base = f"{server.url}/api/v1"
    status, body = await _post(http, f"{base}/communities", w.owner["access_token"],
                               {"name": "Coaching"})
    assert status == 201, body
    w.community_id = body["community"]["id"]
    public_id = body["channels"][0]["id"]
    status, body = await _post(http, f"{base}/communities/{w.community_id}/invites",
                               w.owner["access_token"], {})
    code = body["code"]
    for person in (w.insider, w.member):
        status, _ = await _post(http, f"{base}/invites/{code}/join", person["access_token"], {})
        assert status == 200
    status, body = await _post(
        http, f"{base}/communities/{w.community_id}/channels", w.owner["access_token"],
        {"name": "staff", "private": True, "member_ids": [w.insider["user"]["id"]]})
    assert status == 201, body
    private_id = body["channel"]["id"]
    status, body = await _post(http, f"{base}/dms", w.owner["access_token"],
                               {"user_ids": [w.insider["user"]["id"]]})
    dm_id = body["channel"]["id"]

    owner = await GatewayClient.identified(http, server.ws_url, w.owner["access_token"])
    w.targets = {}
    for name, channel_id in (("public", public_id), ("private", private_id), ("dm", dm_id)):
        message = (await owner.ok("send_message", channel_id=channel_id,
                                  content=f"in {name}"))["message"]
        await owner.ok("add_reaction", channel_id=channel_id, message_id=message["id"],
                       emoji="👍")
        target = {"channel": channel_id, "message": message["id"], "seq": message["seq"]}
        if name != "dm":
            thread = (await owner.ok("create_thread", channel_id=channel_id,
                                     name=f"{name} thread"))["channel"]
            target["thread"] = thread["id"]
        w.targets[name] = target
    await owner.close()
    return w


def _ws_operations(t: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    channel, message = t["channel"], t["message"]
    ops: list[tuple[str, dict[str, Any]]] = [
        ("send_message", {"channel_id": channel, "content": "intrude"}),
        ("edit_message", {"channel_id": channel, "message_id": message, "content": "x"}),
        ("delete_message", {"channel_id": channel, "message_id": message}),
        ("add_reaction", {"channel_id": channel, "message_id": message, "emoji": "👎"}),
        ("remove_reaction", {"channel_id": channel, "message_id": message, "emoji": "👍"}),
        ("fetch_reactions", {"channel_id": channel, "message_id": message, "emoji": "👍"}),
        ("typing", {"channel_id": channel}),
        ("mark_read", {"channel_id": channel, "seq": t["seq"]}),
        ("fetch_history", {"channel_id": channel}),
        ("create_thread", {"channel_id": channel, "name": "sneaky"}),
    ]
    if "thread" in t:
        thread = t["thread"]
        ops += [
            ("send_message", {"channel_id": thread, "content": "intrude"}),
            ("fetch_history", {"channel_id": thread}),
            ("set_thread_archived", {"thread_id": thread, "archived": True}),
            ("join_thread", {"thread_id": thread}),
            ("leave_thread", {"thread_id": thread}),
        ]
    return ops


async def test_websocket_operations_refused_for_those_who_do_not_belong(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    cases = [
        (w.outsider, "public"), (w.outsider, "private"), (w.outsider, "dm"),
        (w.member, "private"), (w.member, "dm"),
    ]
    tried = 0
    for person, target in cases:
        client = await GatewayClient.identified(http, live_server.ws_url, person["access_token"])
        for op, fields in _ws_operations(w.targets[target]):
            reply = await client.request(op, **fields)
            assert reply["op"] == "error", (person["user"]["username"], target, op, reply)
            assert reply["code"] == "not_found", (target, op, reply)
            tried += 1
        await client.close()
    assert tried == 15 + 15 + 10 + 15 + 10

    # Nothing changed: the owner still sees each message once, unedited, one reaction.
    owner = await GatewayClient.identified(http, live_server.ws_url, w.owner["access_token"])
    for name, t in w.targets.items():
        history = await owner.ok("fetch_history", channel_id=t["channel"])
        assert [m["content"] for m in history["messages"]] == [f"in {name}"]
        assert history["messages"][0]["reactions"] == [{"emoji": "👍", "count": 1}]


async def test_message_ids_from_elsewhere_are_not_found(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """A visible channel plus a message id from a hidden one must not reach it."""
    w = await build_world(http, live_server)
    member = await GatewayClient.identified(http, live_server.ws_url, w.member["access_token"])
    visible = w.targets["public"]["channel"]
    hidden_message = w.targets["private"]["message"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("edit_message", {"message_id": hidden_message, "content": "x"}),
        ("delete_message", {"message_id": hidden_message}),
        ("add_reaction", {"message_id": hidden_message, "emoji": "👎"}),
        ("fetch_reactions", {"message_id": hidden_message, "emoji": "👍"}),
        ("send_message", {"reply_to_id": hidden_message, "content": "re"}),
        ("create_thread", {"message_id": hidden_message, "name": "t"}),
    ]
    for op, fields in cases:
        reply = await member.request(op, channel_id=visible, **fields)
        assert reply["code"] == "not_found", (op, reply)


async def test_no_events_leak_to_those_who_do_not_belong(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    outsider = await GatewayClient.identified(http, live_server.ws_url,
                                              w.outsider["access_token"])
    member = await GatewayClient.identified(http, live_server.ws_url, w.member["access_token"])
    insider = await GatewayClient.identified(http, live_server.ws_url, w.insider["access_token"])
    owner = await GatewayClient.identified(http, live_server.ws_url, w.owner["access_token"])
    visible_ids = {c["id"] for s in member.ready["communities"] for c in s["channels"]}
    assert w.targets["public"]["channel"] in visible_ids
    assert w.targets["private"]["channel"] not in visible_ids
    assert w.targets["private"]["thread"] not in visible_ids
    for name in ("public", "private", "dm"):
        await owner.ok("send_message", channel_id=w.targets[name]["channel"],
                       content=f"news in {name}")
    got = [(await insider.event("message_create"))["message"]["content"] for _ in range(3)]
    assert sorted(got) == ["news in dm", "news in private", "news in public"]
    assert (await member.event("message_create"))["message"]["content"] == "news in public"
    await member.no_event("message_create")
    await outsider.no_event("message_create")


async def test_rest_operations_refused(live_server: RunningServer,
                                       http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    base = f"{live_server.url}/api/v1"
    cid = w.community_id
    outsider, member = w.outsider["access_token"], w.member["access_token"]
    for token, name in ((outsider, "public"), (outsider, "private"), (outsider, "dm"),
                        (member, "private"), (member, "dm")):
        async with http.get(f"{base}/channels/{w.targets[name]['channel']}/messages",
                            headers=bearer(token)) as reply:
            assert reply.status == 404, name
    for url, body in ((f"{base}/communities/{cid}/invites", {}),
                      (f"{base}/communities/{cid}/channels", {"name": "mine"})):
        status, _ = await _post(http, url, outsider, body)
        assert status == 404, url
    async with http.get(f"{base}/communities/{cid}/members", headers=bearer(outsider)) as r:
        assert r.status == 404
    async with http.patch(f"{base}/communities/{cid}/members/{w.member['user']['id']}",
                          headers=bearer(outsider), json={"role": "admin"}) as r:
        assert r.status == 404
    # A plain member is in the community but may not manage it.
    status, _ = await _post(http, f"{base}/communities/{cid}/channels", member, {"name": "x"})
    assert status == 403
    status, _ = await _post(http, f"{base}/channels/{w.targets['private']['channel']}/members",
                            member, {"user_id": w.member["user"]["id"]})
    assert status == 403
    async with http.patch(f"{base}/communities/{cid}/members/{w.member['user']['id']}",
                          headers=bearer(member), json={"role": "admin"}) as r:
        assert r.status == 403
    async with http.get(f"{base}/communities") as r:
        assert r.status == 401
