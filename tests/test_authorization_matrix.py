"""The authorization matrix (issue 5): every operation, as every role, in public,
private and tier-gated channels, with and without role and member overrides.

One community, over real websockets and REST against a real server and PostgreSQL:

actors   owner, admin, moderator, member, ``custom`` (a member holding the custom role
         ``helper`` = MANAGE_MESSAGES | MENTION_EVERYONE, tier 2), outsider.
channels ``general``   public, no overrides
         ``staff``     private, listing admin, moderator and custom (and its creator)
         ``vip``       public, required tier 2
         ``ovr_role``  public; ``everyone`` denied ATTACH_FILES, ``helper`` denied
                       SEND_MESSAGES and ADD_REACTIONS
         ``ovr_member`` public; ``member`` allowed MENTION_EVERYONE and MANAGE_MESSAGES
                       and denied CREATE_THREADS; the moderator denied VIEW_CHANNEL
         ``secret``    private, listing only its creator; ``helper`` allowed VIEW_CHANNEL

Every cell of the table below is asserted; a channel one cannot see is ``not_found``.
Then the hierarchy rules (nobody grants bits they lack or manages a role at or above
their own), the audit trail, and the live effect: a change of roles, overrides or tier
makes a connected member gain or lose a channel at once, on one node and across two
server processes sharing Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from persistence import channels as channels_db
from persistence.accounts import create_user
from persistence.database import Database
from protocol.codec import JSON
from rooms.realtime.access import AccessResolver, visible_of
from rooms.realtime.permissions import Permission as P
from rooms.realtime.sessions import Session
from tests.conftest import (
    RunningServer,
    server_nodes,
)
from tests.helpers import GatewayClient, bearer, register

OK, FORBIDDEN, HIDDEN = "ok", "forbidden", "not_found"
CHANNELS = ("general", "staff", "vip", "ovr_role", "ovr_member", "secret")
ACTORS = ("owner", "admin", "moderator", "member", "custom", "outsider")
OPS = ("history", "send", "react", "attach", "everyone", "thread", "thread_send",
       "edit_other", "delete_other")

FULL = {"history": OK, "send": OK, "react": OK, "attach": OK, "everyone": True,
        "thread": OK, "thread_send": OK, "edit_other": FORBIDDEN, "delete_other": OK}
"""Moderator and above: everything, @everyone notifies, delete anyone's message."""
MEMBER = FULL | {"everyone": False, "delete_other": FORBIDDEN}
"""A plain member: posts, reacts, attaches, threads; @everyone stays text."""
NONE = dict.fromkeys(OPS, HIDDEN)
OWNER = FULL | {"edit_other": OK}  # the owner's target messages are their own

EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    **{("owner", c): OWNER for c in CHANNELS},  # ADMINISTRATOR: overrides do not apply
    ("admin", "general"): FULL,
    ("admin", "staff"): FULL,
    ("admin", "vip"): FULL,                     # staff (MANAGE_CHANNELS) ignore tiers
    ("admin", "ovr_role"): FULL | {"attach": FORBIDDEN},
    ("admin", "ovr_member"): FULL,
    ("admin", "secret"): NONE,                  # private and not listed
    ("moderator", "general"): FULL,
    ("moderator", "staff"): FULL,
    ("moderator", "vip"): NONE,                 # tier 0 < 2
    ("moderator", "ovr_role"): FULL | {"attach": FORBIDDEN},
    ("moderator", "ovr_member"): NONE,          # member override denies VIEW
    ("moderator", "secret"): NONE,
    ("member", "general"): MEMBER,
    ("member", "staff"): NONE,
    ("member", "vip"): NONE,
    ("member", "ovr_role"): MEMBER | {"attach": FORBIDDEN},
    ("member", "ovr_member"): MEMBER | {"everyone": True, "delete_other": OK,
                                        "thread": FORBIDDEN},
    ("member", "secret"): NONE,
    ("custom", "general"): FULL,                # helper: MANAGE_MESSAGES, MENTION_EVERYONE
    ("custom", "staff"): FULL,
    ("custom", "vip"): FULL,                    # tier 2
    # helper denied SEND and ADD_REACTIONS: a send with a file or @everyone fails on
    # SEND first; threads use SEND_IN_THREADS, which is not denied.
    ("custom", "ovr_role"): FULL | {"send": FORBIDDEN, "react": FORBIDDEN,
                                    "attach": FORBIDDEN, "everyone": FORBIDDEN},
    ("custom", "ovr_member"): FULL,
    ("custom", "secret"): FULL,                 # role override allows VIEW
    **{("outsider", c): NONE for c in CHANNELS},
}

COMMUNITY_OPS = ("manage_channels", "manage_roles", "set_member_roles", "set_tier",
                 "set_override", "set_channel_tier", "fetch_roles", "invite",
                 # the moderation actions (rooms/moderation/moderation.py) through the same resolver
                 "warn_member", "timeout_member", "ban_and_unban", "fetch_audit_log",
                 "fetch_review_queue",
                 # service keys (server/api_service_keys.py): owner and admin only
                 "create_service_key", "list_service_keys", "revoke_service_key",
                 # the activity sidecar's read of another member (sidecars/activity/http.py):
                 # staff only (it names messages in channels the reader may not see)
                 "read_activity",
                 # the settings page's routes (server/api_settings.py): owner and admin
                 "update_community", "update_channel", "list_invites", "revoke_invite")
STAFF_OPS = {"warn_member": OK, "timeout_member": OK, "fetch_audit_log": OK,
             "fetch_review_queue": OK}
COMMUNITY_EXPECTED: dict[str, dict[str, str]] = {
    "owner": dict.fromkeys(COMMUNITY_OPS, OK),
    "admin": dict.fromkeys(COMMUNITY_OPS, OK),
    "moderator": dict.fromkeys(COMMUNITY_OPS, FORBIDDEN) | STAFF_OPS | {
        "fetch_roles": OK, "invite": OK, "read_activity": OK},
    "member": dict.fromkeys(COMMUNITY_OPS, FORBIDDEN) | {"fetch_roles": OK, "invite": OK},
    # helper grants VIEW_AUDIT_LOG, nothing else at community level
    "custom": dict.fromkeys(COMMUNITY_OPS, FORBIDDEN) | {"fetch_roles": OK, "invite": OK,
                                                        "fetch_audit_log": OK},
    "outsider": dict.fromkeys(COMMUNITY_OPS, HIDDEN),
}

HELPER_BITS = int(P.MANAGE_MESSAGES | P.MENTION_EVERYONE | P.VIEW_AUDIT_LOG)
ATTACHMENT = {"url": "https://files.example/a.png", "filename": "a.png",
              "content_type": "image/png", "size": 10}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str,
               body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with http.request(method, url, headers=bearer(token), json=body) as reply:
        text = await reply.text()
        return reply.status, (await reply.json() if text else None)


class World:
    def __init__(self) -> None:
        self.people: dict[str, dict[str, Any]] = {}
        self.target: dict[str, Any] = {}
        self.stranger: dict[str, Any] = {}
        """Never joins: banned and unbanned pre-emptively by the matrix."""
        self.community_id = 0
        self.channels: dict[str, int] = {}
        self.threads: dict[str, int] = {}
        self.messages: dict[str, int] = {}
        self.helper = 0
        self.base = ""

    def uid(self, name: str) -> int:
        return int(self.people[name]["user"]["id"])

    def token(self, name: str) -> str:
        return str(self.people[name]["access_token"])


async def build_world(http: aiohttp.ClientSession, server: RunningServer) -> World:
    w = World()
    w.base = base = f"{server.url}/api/v1"
    for name in (*ACTORS, "target", "stranger"):
        person = await register(http, server.url)
        if name == "target":
            w.target = person
        elif name == "stranger":
            w.stranger = person
        else:
            w.people[name] = person
    owner = w.token("owner")
    status, body = await call(http, "POST", f"{base}/communities", owner, {"name": "Matrix"})
    assert status == 201, body
    w.community_id = cid = body["community"]["id"]
    w.channels["general"] = body["channels"][0]["id"]
    status, body = await call(http, "POST", f"{base}/communities/{cid}/invites", owner, {})
    code = body["code"]
    for person in (*(w.people[n] for n in ("admin", "moderator", "member", "custom")),
                   w.target):
        status, _ = await call(http, "POST", f"{base}/invites/{code}/join",
                               person["access_token"], {})
        assert status == 200
    for name, role in (("admin", "admin"), ("moderator", "moderator")):
        status, body = await call(http, "PATCH", f"{base}/communities/{cid}/members/"
                                  f"{w.uid(name)}", owner, {"role": role})
        assert status == 200, body
    status, body = await call(http, "POST", f"{base}/communities/{cid}/roles", owner,
                              {"name": "helper", "permissions": HELPER_BITS, "position": 10,
                               "reason": "matrix"})
    assert status == 201, body
    w.helper = body["role"]["id"]
    status, body = await call(http, "PUT", f"{base}/communities/{cid}/members/"
                              f"{w.uid('custom')}/roles", owner, {"role_ids": [w.helper]})
    assert status == 200 and body["member"]["role_ids"] == [w.helper], body
    status, body = await call(http, "PUT", f"{base}/communities/{cid}/members/"
                              f"{w.uid('custom')}/tier", owner, {"tier": 2})
    assert status == 200 and body["member"]["tier"] == 2, body

    async def channel(name: str, private: bool = False, members: tuple[str, ...] = ()) -> int:
        status, body = await call(http, "POST", f"{base}/communities/{cid}/channels", owner,
                                  {"name": name, "private": private,
                                   "member_ids": [w.uid(m) for m in members]})
        assert status == 201, body
        w.channels[name] = body["channel"]["id"]
        return int(body["channel"]["id"])

    await channel("staff", private=True, members=("admin", "moderator", "custom"))
    vip = await channel("vip")
    status, body = await call(http, "PUT", f"{base}/channels/{vip}/tier", owner, {"tier": 2})
    assert status == 200 and body["channel"]["required_tier"] == 2, body
    ovr_role = await channel("ovr_role")
    ovr_member = await channel("ovr_member")
    secret = await channel("secret", private=True)
    for channel_id, kind, target, allow, deny in (
            (ovr_role, "role", w.helper, 0, P.SEND_MESSAGES | P.ADD_REACTIONS),
            (ovr_role, "everyone", 0, 0, P.ATTACH_FILES),
            (ovr_member, "member", w.uid("member"), P.MENTION_EVERYONE | P.MANAGE_MESSAGES,
             P.CREATE_THREADS),
            (ovr_member, "member", w.uid("moderator"), 0, P.VIEW_CHANNEL),
            (secret, "role", w.helper, P.VIEW_CHANNEL, 0)):
        status, body = await call(http, "PUT", f"{base}/channels/{channel_id}/overrides/"
                                  f"{kind}/{target}", owner,
                                  {"allow": int(allow), "deny": int(deny)})
        assert status == 200, body
        assert body["override"]["allow"] == allow and body["override"]["deny"] == deny

    client = await GatewayClient.identified(http, server.ws_url, owner)
    for name, channel_id in w.channels.items():
        message = (await client.ok("send_message", channel_id=channel_id,
                                   content=f"owner in {name}"))["message"]
        w.messages[name] = message["id"]
        thread = (await client.ok("create_thread", channel_id=channel_id,
                                  name=f"{name} thread"))["channel"]
        w.threads[name] = thread["id"]
    await client.close()
    return w


def outcome(reply: dict[str, Any]) -> str:
    if reply["op"] == "ok":
        return OK
    return str(reply["code"])


async def try_op(owner: GatewayClient, actor: GatewayClient, w: World, op: str,
                 channel: str) -> Any:
    channel_id, message_id = w.channels[channel], w.messages[channel]
    if op == "history":
        return outcome(await actor.request("fetch_history", channel_id=channel_id))
    if op == "send":
        return outcome(await actor.request("send_message", channel_id=channel_id,
                                           content="hello"))
    if op == "react":
        return outcome(await actor.request("add_reaction", channel_id=channel_id,
                                           message_id=message_id, emoji="👍"))
    if op == "attach":
        return outcome(await actor.request("send_message", channel_id=channel_id,
                                           content="file", attachments=[ATTACHMENT]))
    if op == "everyone":
        reply = await actor.request("send_message", channel_id=channel_id,
                                    content="@everyone look")
        if reply["op"] != "ok":
            return reply["code"]
        return bool(reply["data"]["message"]["mention_everyone"])
    if op == "thread":
        return outcome(await actor.request("create_thread", channel_id=channel_id,
                                           name="new thread"))
    if op == "thread_send":
        return outcome(await actor.request("send_message", channel_id=w.threads[channel],
                                           content="in the thread"))
    if op == "edit_other":
        return outcome(await actor.request("edit_message", channel_id=channel_id,
                                           message_id=message_id, content="edited"))
    if op == "delete_other":
        victim = (await owner.ok("send_message", channel_id=channel_id,
                                 content="to be deleted"))["message"]["id"]
        return outcome(await actor.request("delete_message", channel_id=channel_id,
                                           message_id=victim))
    raise AssertionError(op)


async def test_every_operation_as_every_role_in_every_kind_of_channel(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    owner = await GatewayClient.identified(http, live_server.ws_url, w.token("owner"))
    mismatches: list[str] = []
    checked = 0
    for actor_name in ACTORS:
        actor = await GatewayClient.identified(http, live_server.ws_url, w.token(actor_name))
        for channel in CHANNELS:
            expected = EXPECTED[(actor_name, channel)]
            for op in OPS:
                got = await try_op(owner, actor, w, op, channel)
                checked += 1
                if got != expected[op]:
                    mismatches.append(f"{actor_name:9} {channel:10} {op:12} "
                                      f"expected {expected[op]!r}, got {got!r}")
        await actor.close()
    await owner.close()
    assert not mismatches, "\n" + "\n".join(mismatches)
    assert checked == len(ACTORS) * len(CHANNELS) * len(OPS)


async def test_ready_lists_exactly_the_visible_channels(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """identify (the index-driven visible-channel query + resolver) agrees with the
    table: the channels in ``ready`` are exactly those whose history is readable, and
    REST history answers the same."""
    w = await build_world(http, live_server)
    for actor_name in ACTORS:
        client = await GatewayClient.connect(http, live_server.ws_url)
        ready = await client.identify(w.token(actor_name))
        ours = [s for s in ready["communities"] if s["community"]["id"] == w.community_id]
        assert len(ours) == (0 if actor_name == "outsider" else 1), actor_name
        listed = {c["id"] for s in ours for c in s["channels"] if c["kind"] != "thread"}
        threads = {c["parent_id"] for s in ours for c in s["channels"] if c["kind"] == "thread"}
        expected = {w.channels[c] for c in CHANNELS
                    if EXPECTED[(actor_name, c)]["history"] == OK}
        assert listed == expected, actor_name
        assert threads == expected, actor_name  # each visible channel's thread, no other
        for channel in CHANNELS:
            status, _ = await call(http, "GET", f"{w.base}/channels/"
                                   f"{w.channels[channel]}/messages", w.token(actor_name))
            want = 200 if EXPECTED[(actor_name, channel)]["history"] == OK else 404
            assert status == want, (actor_name, channel, status)
        if actor_name == "custom":
            snapshot = ours[0]
            assert snapshot["role_ids"] == [w.helper] and snapshot["tier"] == 2
            assert snapshot["permissions"] & HELPER_BITS == HELPER_BITS
            assert [r["name"] for r in snapshot["roles"]] == ["helper"]
        await client.close()


async def try_community_op(http: aiohttp.ClientSession, actor: GatewayClient, w: World,
                           op: str, name: str) -> str:
    cid, target = w.community_id, int(w.target["user"]["id"])
    if op == "manage_channels":
        status, _ = await call(http, "POST", f"{w.base}/communities/{cid}/channels",
                                  w.token(name), {"name": f"by-{name}"})
        return {201: OK, 403: FORBIDDEN, 404: HIDDEN}.get(status, str(status))
    if op == "invite":
        status, _ = await call(http, "POST", f"{w.base}/communities/{cid}/invites",
                               w.token(name), {})
        return {200: OK, 201: OK, 403: FORBIDDEN, 404: HIDDEN}.get(status, str(status))
    if op in ("update_community", "update_channel", "list_invites", "revoke_invite"):
        if op == "update_community":
            status, _ = await call(http, "PATCH", f"{w.base}/communities/{cid}",
                                   w.token(name), {"description": f"set by {name}"})
        elif op == "update_channel":
            status, _ = await call(http, "PATCH", f"{w.base}/channels/"
                                   f"{w.channels['general']}", w.token(name),
                                   {"topic": f"set by {name}"})
        elif op == "list_invites":
            status, _ = await call(http, "GET", f"{w.base}/communities/{cid}/invites",
                                   w.token(name))
        else:
            status, made = await call(http, "POST", f"{w.base}/communities/{cid}/invites",
                                      w.token("owner"), {})
            assert status == 201, made
            status, _ = await call(http, "DELETE", f"{w.base}/communities/{cid}/invites/"
                                   f"{made['code']}", w.token(name))
        return {200: OK, 204: OK, 403: FORBIDDEN, 404: HIDDEN}.get(status, str(status))
    if op in ("create_service_key", "list_service_keys", "revoke_service_key",
              "read_activity"):
        keys = f"{w.base}/communities/{cid}/service-keys"
        if op == "create_service_key":
            status, _ = await call(http, "POST", keys, w.token(name),
                                   {"name": f"k-{name}", "scopes": ["tiers:read"]})
        elif op == "list_service_keys":
            status, _ = await call(http, "GET", keys, w.token(name))
        elif op == "revoke_service_key":
            status, made = await call(http, "POST", keys, w.token("owner"),
                                      {"name": "victim", "scopes": ["tiers:read"]})
            assert status == 201, made
            status, _ = await call(http, "DELETE", f"{keys}/{made['key']['id']}",
                                   w.token(name))
        else:
            status, _ = await call(http, "GET", f"{w.base}/communities/{cid}/members/"
                                   f"{target}/activity", w.token(name))
        return {200: OK, 201: OK, 403: FORBIDDEN, 404: HIDDEN}.get(status, str(status))
    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "manage_roles": ("create_role", {"community_id": cid, "name": f"r-{name}",
                                         "position": 1}),
        "set_member_roles": ("set_member_roles", {"community_id": cid, "user_id": target,
                                                  "role_ids": []}),
        "set_tier": ("set_member_tier", {"community_id": cid, "user_id": target, "tier": 1}),
        "set_override": ("set_channel_override", {
            "channel_id": w.channels["general"], "kind": "member", "target_id": target,
            "allow": int(P.ADD_REACTIONS)}),
        "set_channel_tier": ("set_channel_tier", {"channel_id": w.channels["general"],
                                                  "tier": 0}),
        "fetch_roles": ("fetch_roles", {"community_id": cid}),
        "warn_member": ("warn_member", {"community_id": cid, "user_id": target,
                                        "reason": "matrix"}),
        "timeout_member": ("timeout_member", {"community_id": cid, "user_id": target,
                                              "duration_s": 60, "reason": "matrix"}),
        "fetch_audit_log": ("fetch_audit_log", {"community_id": cid}),
        "fetch_review_queue": ("fetch_review_queue", {"community_id": cid}),
    }
    if op == "ban_and_unban":
        stranger = int(w.stranger["user"]["id"])
        first = outcome(await actor.request("ban_member", community_id=cid, user_id=stranger,
                                            reason="matrix"))
        second = outcome(await actor.request("unban_member", community_id=cid,
                                             user_id=stranger, reason="matrix"))
        assert first == second, (name, first, second)
        return first
    request, fields = requests[op]
    return outcome(await actor.request(request, **fields))


async def test_community_operations_as_every_role(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    mismatches: list[str] = []
    for actor_name in ACTORS:
        actor = await GatewayClient.identified(http, live_server.ws_url, w.token(actor_name))
        for op in COMMUNITY_OPS:
            got = await try_community_op(http, actor, w, op, actor_name)
            if got != COMMUNITY_EXPECTED[actor_name][op]:
                mismatches.append(f"{actor_name:9} {op:16} expected "
                                  f"{COMMUNITY_EXPECTED[actor_name][op]}, got {got}")
        await actor.close()
    assert not mismatches, "\n" + "\n".join(mismatches)


async def test_session_routes_act_only_for_their_own_credential(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """The web session routes (server/api_web_auth.py) take the browser's cookie with its
    CSRF proof and nothing else: no actor's bearer token refreshes or signs anyone out
    there (403 ``csrf_failed`` before any lookup). ``POST /auth/logout-all`` signs out
    the caller only: every actor's own refresh token dies, nobody else's."""
    w = await build_world(http, live_server)
    for actor_name in ACTORS:
        for route in ("refresh", "logout", "logout-all"):
            status, body = await call(http, "POST", f"{w.base}/auth/web/{route}",
                                      w.token(actor_name))
            assert (status, body["error"]["code"]) == (403, "csrf_failed"), (actor_name, route)
    for index, actor_name in enumerate(ACTORS):
        status, _ = await call(http, "POST", f"{w.base}/auth/logout-all", w.token(actor_name))
        assert status == 204, actor_name
        for other_name in ACTORS:
            refresh = w.people[other_name]["refresh_token"]
            async with http.post(f"{w.base}/auth/refresh",
                                 json={"refresh_token": refresh}) as reply:
                gone = ACTORS.index(other_name) <= index
                assert reply.status == (401 if gone else 200), (actor_name, other_name)
                if not gone:
                    w.people[other_name]["refresh_token"] = (await reply.json())[
                        "refresh_token"]
    status, body = await call(http, "POST", f"{w.base}/auth/logout-all", "not-a-token")
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_the_principal_route_takes_no_user_token(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    """The service routes (``/service/...``: setting a tier, publishing an event) need
    a service key with the scope: no user's bearer token works there, the owner's
    included."""
    w = await build_world(http, live_server)
    url = (f"{w.base}/service/communities/{w.community_id}/members/"
           f"{w.uid('member')}/tier")
    publish = f"{w.base}/service/communities/{w.community_id}/events"
    event = {"t": "activity_recorded", "community_id": w.community_id, "kind": "live",
             "total": 1, "at": 1}
    for actor_name in ACTORS:
        status, body = await call(http, "PUT", url, w.token(actor_name), {"tier": 1})
        assert (status, body["error"]["code"]) == (401, "unauthorized"), actor_name
        status, body = await call(http, "POST", publish, w.token(actor_name),
                                  {"event": event})
        assert (status, body["error"]["code"]) == (401, "unauthorized"), actor_name


async def test_hierarchy_nobody_grants_what_they_lack(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    cid = w.community_id
    owner = await GatewayClient.identified(http, live_server.ws_url, w.token("owner"))
    admin = await GatewayClient.identified(http, live_server.ws_url, w.token("admin"))
    # An admin cannot mint ADMINISTRATOR, nor touch the owner.
    reply = await admin.request("create_role", community_id=cid, name="god",
                                permissions=int(P.ADMINISTRATOR))
    assert reply["code"] == FORBIDDEN
    reply = await admin.request("set_member_tier", community_id=cid, user_id=w.uid("owner"),
                                tier=5)
    assert reply["code"] == FORBIDDEN
    reply = await admin.request("set_member_roles", community_id=cid,
                                user_id=w.uid("owner"), role_ids=[w.helper])
    assert reply["code"] == FORBIDDEN
    # A custom-role manager ranks by their highest role's position (5).
    manager = (await owner.ok("create_role", community_id=cid, name="manager", position=5,
                              permissions=int(P.MANAGE_ROLES | P.KICK_MEMBERS)))["role"]
    await owner.ok("set_member_roles", community_id=cid, user_id=w.uid("member"),
                   role_ids=[manager["id"]])
    member = await GatewayClient.identified(http, live_server.ws_url, w.token("member"))
    low = (await member.ok("create_role", community_id=cid, name="low", position=4,
                           permissions=int(P.KICK_MEMBERS)))["role"]
    cases: list[dict[str, Any]] = [
        {"name": "peer", "position": 5}, {"name": "above", "position": 11},
        {"name": "bits", "position": 1, "permissions": int(P.MANAGE_CHANNELS)}]
    for fields in cases:
        reply = await member.request("create_role", community_id=cid, **fields)
        assert reply["code"] == FORBIDDEN, fields
    assert (await member.request("update_role", role_id=w.helper,
                                 name="mine"))["code"] == FORBIDDEN
    assert (await member.request("delete_role", role_id=manager["id"]))["code"] == FORBIDDEN
    assert (await member.request("update_role", role_id=low["id"],
                                 position=7))["code"] == FORBIDDEN
    # Assign the low role to someone below (the target), not to the admin above.
    target = int(w.target["user"]["id"])
    got = await member.ok("set_member_roles", community_id=cid, user_id=target,
                          role_ids=[low["id"]])
    assert got["member"]["role_ids"] == [low["id"]]
    reply = await member.request("set_member_roles", community_id=cid,
                                 user_id=w.uid("admin"), role_ids=[low["id"]])
    assert reply["code"] == FORBIDDEN
    # ...nor a role above their rank to anyone.
    reply = await member.request("set_member_roles", community_id=cid, user_id=target,
                                 role_ids=[low["id"], w.helper])
    assert reply["code"] == FORBIDDEN
    # Overrides: only bits one holds.
    reply = await member.request("set_channel_override", channel_id=w.channels["general"],
                                 kind="role", target_id=low["id"],
                                 allow=int(P.MANAGE_CHANNELS))
    assert reply["code"] == FORBIDDEN  # lacks MANAGE_CHANNELS (needed to set overrides)
    # Bad input is refused with a documented code and changes nothing.
    reply = await owner.request("set_channel_override", channel_id=w.channels["general"],
                                kind="everyone", target_id=5, allow=1)
    assert reply["code"] == "invalid_argument"
    reply = await owner.request("set_channel_override", channel_id=w.channels["general"],
                                kind="role", target_id=w.helper, allow=1, deny=1)
    assert reply["code"] == "invalid_argument"
    reply = await owner.request("create_role", community_id=cid, name="HELPER")
    assert reply["code"] == "already_exists"
    members = (await owner.ok("fetch_members", community_id=cid, limit=100))["members"]
    by_id = {m["user"]["id"]: m for m in members}
    assert by_id[w.uid("custom")]["role_ids"] == [w.helper]
    assert by_id[w.uid("custom")]["tier"] == 2
    assert by_id[w.uid("member")]["role_ids"] == [manager["id"]]
    assert by_id[target]["role_ids"] == [low["id"]] and by_id[target]["tier"] == 0
    roles = (await owner.ok("fetch_roles", community_id=cid))["roles"]
    assert sorted(r["name"] for r in roles) == ["helper", "low", "manager"]
    status, _ = await call(http, "POST", f"{w.base}/channels/{w.channels['secret']}/members",
                           w.token("owner"), {"user_id": target})
    assert status in (200, 204), status
    # Every change is in the audit log, with its actor.
    log = (await owner.ok("fetch_audit_log", community_id=cid, limit=100))["entries"]
    actions = [(e["action"], e["actor_id"]) for e in log]
    for expected in (("role.create", w.uid("owner")), ("member.roles", w.uid("owner")),
                     ("member.tier", w.uid("owner")), ("channel.override", w.uid("owner")),
                     ("channel.tier", w.uid("owner")), ("role.create", w.uid("member")),
                     ("member.role", w.uid("owner")), ("channel.member.add", w.uid("owner")),
                     ("member.roles", w.uid("member"))):
        assert expected in actions, expected
    for client in (owner, admin, member):
        await client.close()


async def gained(client: GatewayClient, channel_id: int, timeout: float = 5) -> None:
    """Wait for ``channel_create`` of ``channel_id`` (others may come first)."""
    while True:
        event = await client.event("channel_create", timeout=timeout)
        if event["channel"]["id"] == channel_id:
            return


async def _live_gain_and_loss(http: aiohttp.ClientSession, w: World, owner: GatewayClient,
                              watcher: GatewayClient, poster: GatewayClient) -> None:
    """``watcher`` (the plain member) gains and loses channels as the owner changes a
    role, an override and a tier; ``poster`` (the owner on the watcher's node or
    another) posts to prove delivery starts and stops."""
    cid, member = w.community_id, w.uid("member")
    secret, vip = w.channels["secret"], w.channels["vip"]
    # 1. Gain through a role: give the member `helper` (allowed VIEW in #secret).
    await owner.ok("set_member_roles", community_id=cid, user_id=member, role_ids=[w.helper])
    await gained(watcher, secret)
    sent = (await poster.ok("send_message", channel_id=secret, content="now you see"))
    got = await watcher.event("message_create", timeout=5)
    assert got["message"]["id"] == sent["message"]["id"]
    assert (await watcher.request("fetch_history", channel_id=secret))["op"] == "ok"
    # 2. Lose it through a member override that denies VIEW (member beats role).
    await owner.ok("set_channel_override", channel_id=secret, kind="member",
                   target_id=member, deny=int(P.VIEW_CHANNEL))
    lost = await watcher.event("channel_delete", timeout=5, channel_id=secret)
    assert lost["community_id"] == cid
    await poster.ok("send_message", channel_id=secret, content="not for you")
    await watcher.no_event("message_create", wait=0.5)
    assert (await watcher.request("fetch_history", channel_id=secret))["code"] == HIDDEN
    assert (await watcher.request("send_message", channel_id=secret,
                                  content="x"))["code"] == HIDDEN
    # 3. Clearing the override gives it back; removing the role takes it away again.
    await owner.ok("clear_channel_override", channel_id=secret, kind="member",
                   target_id=member)
    await gained(watcher, secret)
    await owner.ok("set_member_roles", community_id=cid, user_id=member, role_ids=[])
    await watcher.event("channel_delete", timeout=5, channel_id=secret)
    # 4. Tier: raising the member's tier opens #vip, lowering it closes it.
    await owner.ok("set_member_tier", community_id=cid, user_id=member, tier=3)
    await gained(watcher, vip)
    sent = await poster.ok("send_message", channel_id=vip, content="vip news")
    got = await watcher.event("message_create", timeout=5)
    assert got["message"]["id"] == sent["message"]["id"]
    await owner.ok("set_channel_tier", channel_id=vip, tier=4)
    await watcher.event("channel_delete", timeout=5, channel_id=vip)
    assert (await watcher.request("fetch_history", channel_id=vip))["code"] == HIDDEN
    # 5. A role's bits change for everyone holding it, live: `helper` loses
    #    MENTION_EVERYONE, so the custom member's @everyone becomes plain text.
    await owner.ok("update_role", role_id=w.helper, permissions=int(P.MANAGE_MESSAGES))


async def test_live_gain_and_loss_on_one_node(
        live_server: RunningServer, http: aiohttp.ClientSession) -> None:
    w = await build_world(http, live_server)
    owner = await GatewayClient.identified(http, live_server.ws_url, w.token("owner"))
    watcher = await GatewayClient.identified(http, live_server.ws_url, w.token("member"))
    custom = await GatewayClient.identified(http, live_server.ws_url, w.token("custom"))
    await _live_gain_and_loss(http, w, owner, watcher, owner)
    await custom.event("permissions_update", timeout=5)
    # The role's new bits apply to the next send without a reconnect.
    for _ in range(50):
        reply = await custom.ok("send_message", channel_id=w.channels["general"],
                                content="@everyone hi")
        if not reply["message"]["mention_everyone"]:
            break
        await asyncio.sleep(0.05)
    assert reply["message"]["mention_everyone"] is False
    for client in (owner, watcher, custom):
        await client.close()


@pytest.fixture
def two_nodes(database_url: str, redis_url: str) -> Iterator[list[RunningServer]]:
    with server_nodes(database_url, 2, HEARTH_REDIS_URL=redis_url) as nodes:
        yield nodes


async def test_live_gain_and_loss_across_two_nodes(
        two_nodes: list[RunningServer], http: aiohttp.ClientSession) -> None:
    """The owner changes roles, overrides and tiers on node A; the member connected to
    node B gains and loses channels at once, and message delivery follows."""
    a, b = two_nodes
    w = await build_world(http, a)
    owner = await GatewayClient.identified(http, a.ws_url, w.token("owner"))
    watcher = await GatewayClient.identified(http, b.ws_url, w.token("member"))
    await _live_gain_and_loss(http, w, owner, watcher, owner)
    for client in (owner, watcher):
        await client.close()


def _plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        yield plan
        for child in plan.get("Plans", []):
            yield from _plan_nodes(child)


async def test_visible_channel_query_costs_what_the_member_sees(db: Database) -> None:
    """10,000 private channels in one community, the member listed in 3 and opened to
    2 more by a role override, plus 20 public ones with a hiding override: identify's
    query reads channels through indexes only (no sequential scan of ``channels``),
    touches about what the member sees, and the resolver then applies the overrides."""
    async with db.transaction("setup") as conn:
        owner = await create_user(conn, username="owner_big", display_name="Owner",
                                  password_hash=None)
        member = await create_user(conn, username="member_big", display_name="Member",
                                   password_hash=None)
        cid = await conn.fetchval(
            "INSERT INTO communities (name, owner_id) VALUES ('big', $1) RETURNING id",
            owner.id)
        await conn.execute(
            "INSERT INTO community_members (community_id, user_id, role) VALUES "
            "($1, $2, 'owner'), ($1, $3, 'member')", cid, owner.id, member.id)
        await conn.execute(
            "INSERT INTO channels (community_id, kind, name, private, position) "
            "SELECT $1, 'text', 'p' || g, true, g FROM generate_series(1, 10000) g", cid)
        await conn.execute(
            "INSERT INTO channels (community_id, kind, name, private, position) "
            "SELECT $1, 'text', 'pub' || g, false, 20000 + g FROM generate_series(1, 20) g",
            cid)
        private = [r["id"] for r in await conn.fetch(
            "SELECT id FROM channels WHERE community_id = $1 AND private ORDER BY id", cid)]
        public = [r["id"] for r in await conn.fetch(
            "SELECT id FROM channels WHERE community_id = $1 AND NOT private ORDER BY id",
            cid)]
        await conn.execute("INSERT INTO channel_members (channel_id, user_id) "
                           "SELECT unnest($1::bigint[]), $2", private[:3], member.id)
        role_id = await conn.fetchval(
            "INSERT INTO community_roles (community_id, name, position) "
            "VALUES ($1, 'readers', 1) RETURNING id", cid)
        await conn.execute("INSERT INTO member_roles (community_id, user_id, role_id) "
                           "VALUES ($1, $2, $3)", cid, member.id, role_id)
        for channel_id in private[5000:5002]:
            await conn.execute(
                "INSERT INTO channel_overrides (channel_id, community_id, target_kind, "
                "target_id, allow) VALUES ($1, $2, 'role', $3, $4)",
                channel_id, cid, role_id, int(P.VIEW_CHANNEL))
        await conn.execute(
            "INSERT INTO channel_overrides (channel_id, community_id, target_kind, "
            "target_id, deny) VALUES ($1, $2, 'member', $3, $4)",
            public[0], cid, member.id, int(P.VIEW_CHANNEL))
        await conn.execute("ANALYZE channels; ANALYZE channel_members; "
                           "ANALYZE channel_overrides; ANALYZE community_members")
    async with db.connection() as conn:
        raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) "
                                  + channels_db.VISIBLE_CHANNELS_SQL, member.id, None)
        plan = json.loads(raw)[0]["Plan"]
        nodes = list(_plan_nodes(plan))
        seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan"
                     and n.get("Relation Name") == "channels"]
        assert seq_scans == [], seq_scans
        channel_rows = sum(n.get("Actual Rows", 0) * n.get("Actual Loops", 1)
                           + n.get("Rows Removed by Filter", 0) for n in nodes
                           if n.get("Relation Name") == "channels")
        assert channel_rows < 200, channel_rows  # not 10,020
        candidates = await channels_db.visible_community_channels(conn, member.id)
        session = Session(member, JSON, replay_size=1)
        visible = await AccessResolver(db).load_view(conn, session)
    assert {c.id for c in candidates} == {*public, *private[:3], *private[5000:5002]}
    assert [c.id for c in visible] == sorted(
        {*public[1:], *private[:3], *private[5000:5002]},
        key=lambda i: (i in public, i))  # positions: private 1..10000, public after
    assert [c.id for c in visible_of(session.access, member.id, candidates)] == \
        [c.id for c in visible]


def test_resolution_order_pure() -> None:
    """rooms.realtime.permissions.resolve in the documented order (docs/moderation.md)."""
    from protocol.models import ChannelKind, Role
    from rooms.realtime.permissions import Override, base_bits, resolve, thread_bits

    member = base_bits(Role.MEMBER)
    send = int(P.SEND_MESSAGES)

    def bits(overrides: list[Override], **kw: Any) -> P:
        return resolve(kw.pop("base", member), overrides, user_id=7,
                       role_ids=kw.pop("roles", {1, 2}), **kw)

    # everyone deny, then a role's allow wins back
    assert bits([Override("everyone", 0, 0, send), Override("role", 1, send, 0)]) & P.SEND_MESSAGES
    # one role's allow beats another role's deny (combined: denies, then allows)
    assert bits([Override("role", 1, 0, send), Override("role", 2, send, 0)]) & P.SEND_MESSAGES
    # a role the member does not hold does nothing
    assert bits([Override("role", 3, 0, send)]) & P.SEND_MESSAGES
    # the member's own deny beats every role allow
    assert not bits([Override("role", 1, send, 0), Override("member", 7, 0, send)]) \
        & P.SEND_MESSAGES
    # someone else's member override does nothing
    assert bits([Override("member", 8, 0, send)]) & P.SEND_MESSAGES
    # no VIEW: nothing at all
    assert bits([Override("everyone", 0, 0, int(P.VIEW_CHANNEL))]) == P(0)
    # private: listed sees; not listed sees only with an allow; a member deny hides
    assert bits([], private=True) == P(0)
    assert bits([], private=True, listed=True) & P.VIEW_CHANNEL
    assert bits([Override("role", 2, int(P.VIEW_CHANNEL), 0)], private=True) & P.VIEW_CHANNEL
    assert bits([Override("member", 7, 0, int(P.VIEW_CHANNEL))], private=True,
                listed=True) == P(0)
    # tiers: below is nothing, staff see it anyway
    assert bits([], required_tier=2, tier=1) == P(0)
    assert bits([], required_tier=2, tier=2) & P.VIEW_CHANNEL
    assert bits([], required_tier=2, base=base_bits(Role.ADMIN)) & P.VIEW_CHANNEL
    assert bits([], required_tier=2, base=base_bits(Role.MODERATOR)) == P(0)
    # ADMINISTRATOR: overrides do not apply, private lists still do
    owner = base_bits(Role.OWNER)
    assert bits([Override("member", 7, 0, send)], base=owner) & P.SEND_MESSAGES
    assert bits([], base=owner, private=True) == P(0)
    assert bits([], base=owner, required_tier=9) & P.VIEW_CHANNEL
    # a custom role with ADMINISTRATOR makes its holder an administrator
    assert base_bits(Role.MEMBER, [int(P.ADMINISTRATOR)]) & P.BAN_MEMBERS
    assert base_bits(None, [int(P.ADMINISTRATOR)]) == P(0)
    # announcements: SEND only with MANAGE_MESSAGES, or an allow override
    assert not bits([], kind=ChannelKind.ANNOUNCEMENT) & P.SEND_MESSAGES
    assert bits([Override("role", 1, send, 0)], kind=ChannelKind.ANNOUNCEMENT) \
        & P.SEND_MESSAGES
    assert bits([], kind=ChannelKind.ANNOUNCEMENT, base=base_bits(Role.MODERATOR)) \
        & P.SEND_MESSAGES
    # categories never take messages; threads post with SEND_IN_THREADS
    assert not bits([], kind=ChannelKind.CATEGORY) & P.SEND_MESSAGES
    parent = bits([Override("everyone", 0, 0, send)])
    assert thread_bits(parent) & P.SEND_MESSAGES
    assert not thread_bits(bits([Override("everyone", 0, 0, int(P.SEND_IN_THREADS))])) \
        & P.SEND_MESSAGES
    assert thread_bits(P(0)) == P(0)


# ------------------------------------------------------------------------------ courses
# The courses sidecar (sidecars/courses/http.py, docs/courses.md): every route, as every
# kind of caller. ``teacher`` is a plain member holding a custom role with only
# MANAGE_COURSES (the new bit: staff is the bit, not the fixed role); ``learner`` is
# enrolled (and earned a certificate), ``member`` and the moderator are members who are
# not; ``key`` is a service key with courses:read; ``anon`` sends no credentials.

COURSE_ACTORS = ("owner", "admin", "teacher", "moderator", "learner", "member",
                 "outsider", "anon", "key")
CREATED = 201


def _cells(staff: int, *, moderator: int = 403, learner: int = 403, member: int = 403,
           outsider: int = 404, anon: int = 401, key: int = 401) -> dict[str, int]:
    return {"owner": staff, "admin": staff, "teacher": staff, "moderator": moderator,
            "learner": learner, "member": member, "outsider": outsider, "anon": anon,
            "key": key}


EVERY_MEMBER = {"staff": 200, "moderator": 200, "learner": 200, "member": 200}
PUBLIC = dict.fromkeys(COURSE_ACTORS, 200)

COURSE_MATRIX: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/courses"): _cells(**EVERY_MEMBER),
    ("POST", "/courses"): _cells(CREATED),
    ("GET", "/courses/{course_id}"): _cells(**EVERY_MEMBER),
    ("PATCH", "/courses/{course_id}"): _cells(200),
    ("POST", "/courses/{course_id}/modules"): _cells(CREATED),
    ("PATCH", "/courses/{course_id}/modules/{module_id}"): _cells(200),
    ("POST", "/courses/{course_id}/lessons"): _cells(CREATED),
    ("PATCH", "/courses/{course_id}/lessons/{lesson_id}"): _cells(200),
    # a lesson opens to staff and to the enrolled; to others it is locked
    ("GET", "/courses/{course_id}/lessons/{lesson_id}"): _cells(200, learner=200),
    ("POST", "/courses/{course_id}/lessons/{lesson_id}/questions"): _cells(CREATED),
    ("GET", "/courses/{course_id}/enrolments"): _cells(200, key=200),
    ("POST", "/courses/{course_id}/enrolments/{user_id}/grant"): _cells(200, key=403),
    ("POST", "/courses/{course_id}/enrolments/{user_id}/revoke"): _cells(200),
    ("POST", "/courses/{course_id}/enrolments/{user_id}/release"): _cells(200),
    # learning needs an enrolment: staff who are not enrolled are refused like members
    ("POST", "/courses/{course_id}/progress"): _cells(403, learner=200),
    ("POST", "/courses/{course_id}/lessons/{lesson_id}/complete"): _cells(403, learner=200),
    ("POST", "/courses/{course_id}/lessons/{lesson_id}/attempts"): _cells(403, learner=CREATED),
    ("GET", "/courses/{course_id}/lessons/{lesson_id}/attempts"): _cells(**EVERY_MEMBER),
    ("POST", "/courses/{course_id}/lessons/{lesson_id}/attempts/{attempt_id}/submit"):
        _cells(403, learner=200),
    ("POST", "/courses/{course_id}/lessons/{lesson_id}/submissions"):
        _cells(403, learner=CREATED),
    ("GET", "/courses/{course_id}/lessons/{lesson_id}/submissions"): _cells(**EVERY_MEMBER),
    ("POST", "/courses/{course_id}/submissions/{submission_id}/grade"): _cells(200),
    ("GET", "/courses/{course_id}/certificate"): _cells(404, learner=200, member=404,
                                                        moderator=404),
    ("GET", "/courses/{course_id}/statements"): _cells(200, key=200),
    ("POST", "/certificates/{serial}/revoke"): _cells(200),
    ("GET", "/certificates/{serial}"): PUBLIC,
    ("GET", "/certificates/{serial}/pdf"): PUBLIC,
    # last: enrolling changes who is enrolled (every member may enrol themselves)
    ("POST", "/courses/{course_id}/enrolment"): _cells(**EVERY_MEMBER),
    ("DELETE", "/courses/{course_id}"): _cells(200),
}
"""(method, path after ``/communities/{community_id}`` or ``/api/v1``) -> status per
caller. Cells run in this order."""


async def test_every_course_route_as_every_caller(live_server: RunningServer,
                                                  http: aiohttp.ClientSession) -> None:
    from server.rest.openapi import rest_api
    from tests.course_helpers import Api

    api = Api(http, live_server)
    await api.setup(members=("admin", "moderator", "teacher", "learner", "member", "target"),
                    outsiders=("outsider",))
    cid = api.cid
    for name, role in (("admin", "admin"), ("moderator", "moderator")):
        await api.ok("owner", "PATCH", f"/communities/{cid}/members/{api.uid(name)}",
                     {"role": role})
    role = await api.ok("owner", "POST", f"/communities/{cid}/roles",
                        {"name": "teacher", "permissions": int(P.MANAGE_COURSES),
                         "position": 1, "reason": "matrix"})
    await api.ok("owner", "PUT", f"/communities/{cid}/members/{api.uid('teacher')}/roles",
                 {"role_ids": [role["role"]["id"]]})
    key = (await api.ok("owner", "POST", f"/communities/{cid}/service-keys",
                        {"name": "lrs", "scopes": ["courses:read"]}))["secret"]
    course = await api.course(certificate=True)
    module = await api.module(course)
    text = await api.lesson(course, module)
    quiz = await api.lesson(course, module, kind="quiz", quiz={"pass_percent": 50})
    await api.ok("owner", "POST", api.courses(f"/{course}/lessons/{quiz}/questions"),
                 {"kind": "true_false", "prompt": "yes?", "correct_choices": [0]})
    task = await api.lesson(course, module, kind="assignment")
    await api.ok("learner", "POST", api.courses(f"/{course}/enrolment"))
    await api.ok("owner", "POST", api.courses(f"/{course}/enrolments/{api.uid('target')}/grant"),
                 {})
    graduated = await api.course(certificate=True, title="Done")
    done_module = await api.module(graduated)
    done_lesson = await api.lesson(graduated, done_module)
    await api.ok("learner", "POST", api.courses(f"/{graduated}/enrolment"))
    serial = (await api.ok("learner", "POST", api.courses(
        f"/{graduated}/lessons/{done_lesson}/complete")))["certificate_serial"]
    attempt = (await api.ok("learner", "POST", api.courses(
        f"/{course}/lessons/{quiz}/attempts")))["attempt_id"]
    submission = (await api.ok("learner", "POST", api.courses(
        f"/{course}/lessons/{task}/submissions"), {"kind": "text", "content": "mine"})
    )["submission"]["id"]

    async def cell(method: str, route: str, actor: str) -> int:
        target = api.uid("target")
        path = route.format(course_id=course, module_id=module, lesson_id=text,
                            user_id=target, attempt_id=attempt, submission_id=submission,
                            serial=serial)
        body: Any = None
        if route.endswith("/questions") or "/attempts" in route:
            path = path.replace(f"/lessons/{text}/", f"/lessons/{quiz}/")
        if route.endswith("/submissions"):
            path = path.replace(f"/lessons/{text}/", f"/lessons/{task}/")
            body = {"kind": "text", "content": "x"} if method == "POST" else None
        if route == "/courses/{course_id}/certificate":
            path = path.replace(f"/courses/{course}/", f"/courses/{graduated}/")
        if route.endswith("/submit"):
            if actor == "learner":
                started = await api.ok("learner", "POST",
                                       api.courses(f"/{course}/lessons/{quiz}/attempts"))
                path = path.replace(f"/attempts/{attempt}/",
                                    f"/attempts/{started['attempt_id']}/")
            body = {"answers": []}
        if route.endswith("/revoke") and "enrolments" in route:
            await api.ok("owner", "POST", api.courses(f"/{course}/enrolments/{target}/grant"),
                         {})
            body = {}
        if method == "DELETE":
            path = path.replace(f"/courses/{course}",
                                f"/courses/{await api.course(title='gone')}")
        body = body if body is not None else {
            ("POST", "/courses"): {"title": "new"},
            ("PATCH", "/courses/{course_id}"): {"description": "d"},
            ("POST", "/courses/{course_id}/modules"): {"title": "m"},
            ("PATCH", "/courses/{course_id}/modules/{module_id}"): {"title": "m2"},
            ("POST", "/courses/{course_id}/lessons"): {"module_id": module, "title": "l",
                                                       "kind": "text"},
            ("PATCH", "/courses/{course_id}/lessons/{lesson_id}"): {"body": "b"},
            ("POST", "/courses/{course_id}/lessons/{lesson_id}/questions"): {
                "kind": "true_false", "prompt": "p", "correct_choices": [1]},
            ("POST", "/courses/{course_id}/enrolments/{user_id}/grant"): {},
            ("POST", "/courses/{course_id}/progress"): {"items": [{"lesson_id": text}]},
            ("POST", "/courses/{course_id}/submissions/{submission_id}/grade"): {"score": 0},
            ("POST", "/certificates/{serial}/revoke"): {"reason": "matrix"},
        }.get((method, route))
        full = path if route.startswith("/certificates/{serial}") and method == "GET" \
            else f"/communities/{cid}{path}"
        token = key if actor == "key" else None
        status, _ = await api.call(None if actor in ("anon", "key") else actor, method, full,
                                   body, token=token)
        return status

    mismatches = []
    for (method, route), expected in COURSE_MATRIX.items():
        for actor in COURSE_ACTORS:
            got = await cell(method, route, actor)
            if got != expected[actor]:
                mismatches.append(f"{method:6} {route:60} {actor:9} expected "
                                  f"{expected[actor]}, got {got}")
    assert not mismatches, "\n" + "\n".join(mismatches)
    # every route of the sidecar is in the table (a new route must be added to it)
    operations = {(op.method, op.path.removeprefix("/api/v1")
                   .replace("/communities/{community_id}", "", 1))
                  for op in rest_api(live_server.app).operations if op.tag == "courses"}
    assert operations == set(COURSE_MATRIX), operations ^ set(COURSE_MATRIX)
