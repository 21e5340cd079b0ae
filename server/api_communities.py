"""REST for communities, invites, members, channels, DMs and history (``/api/v1``).

Thin handlers: decode the body, path and query into bounded msgspec types
(:mod:`server.rest.decoding`), call :mod:`rooms.chat.communities`, encode the records.
Refusals raised by the domain become the documented JSON error (:mod:`server.rest.errors`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from protocol.chat import FetchHistory
from protocol.models import ChannelKind, Id, Role
from protocol.presence import FetchMembers
from protocol.rest import (
    ChannelReply,
    CommunitiesReply,
    CommunityCreated,
    HistoryReply,
    InviteCreated,
    MemberReply,
    MembersReply,
    SnapshotReply,
)
from rooms.chat.communities import MAX_GROUP_DM, CommunityService
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import body_of, path_params, query_op, read_body
from server.rest.openapi import rest_api

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
InviteCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateCommunityBody(msgspec.Struct, kw_only=True):
    """A new community; the caller becomes its owner and ``#general`` is created."""

    name: Name


class CreateInviteBody(msgspec.Struct, kw_only=True):
    """An invite code, optionally limited in uses and lifetime."""

    max_uses: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    expires_in_s: Annotated[int, msgspec.Meta(ge=1, le=31_536_000,
                                              description="At most a year.")] | None = None


class SetRoleBody(msgspec.Struct, kw_only=True):
    """The member's new role."""

    role: Role


class CreateChannelBody(msgspec.Struct, kw_only=True):
    """A new channel (``member_ids`` list who may see a private one)."""

    name: Name
    kind: ChannelKind = ChannelKind.TEXT
    private: bool = False
    parent_id: Id | None = None
    topic: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    member_ids: Annotated[list[Id], msgspec.Meta(max_length=1000)] = []


class AddChannelMemberBody(msgspec.Struct, kw_only=True):
    """Who joins the private channel."""

    user_id: Id


class OpenDirectBody(msgspec.Struct, kw_only=True):
    """The other people: one for a DM (reused), 2-9 for a group DM."""

    user_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_GROUP_DM - 1)]


MembersQuery = body_of(FetchMembers, frozenset({"community_id"}))
"""The query of ``GET .../members``: the fields of the websocket op ``fetch_members``."""
HistoryQuery = body_of(FetchHistory, frozenset({"channel_id"}))
"""The query of ``GET .../messages``: the fields of the websocket op ``fetch_history``
(one limit for both: the service's ``history_page_size``)."""


class CommunityPath(msgspec.Struct):
    community_id: Id


class MemberPath(msgspec.Struct):
    community_id: Id
    user_id: Id


class ChannelPath(msgspec.Struct):
    channel_id: Id


class InvitePath(msgspec.Struct):
    code: InviteCode


def add_community_routes(app: web.Application, auth: Authenticator,
                         service: CommunityService) -> None:
    async def create_community(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await read_body(request, CreateCommunityBody)
        snapshot = await service.create_community(user, body.name)
        return json_response(CommunityCreated(community=snapshot.community,
                                              channels=snapshot.channels, snapshot=snapshot),
                             status=201)

    async def list_communities(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        return json_response(CommunitiesReply(communities=await service.communities_of(user)))

    async def create_invite(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        body = await read_body(request, CreateInviteBody)
        code = await service.create_invite(user, path.community_id, body.max_uses,
                                           body.expires_in_s)
        return json_response(InviteCreated(code=code), status=201)

    async def join_invite(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, InvitePath)
        return json_response(SnapshotReply(snapshot=await service.join_by_invite(user,
                                                                                 path.code)))

    async def list_members(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        query = query_op(request, FetchMembers, msgspec.structs.asdict(path))
        members = await service.members(user, path.community_id, query.after, query.limit)
        return json_response(MembersReply(members=members))

    async def set_role(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, MemberPath)
        body = await read_body(request, SetRoleBody)
        member = await service.set_role(user, path.community_id, path.user_id, body.role)
        return json_response(MemberReply(member=member))

    async def create_channel(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, CommunityPath)
        body = await read_body(request, CreateChannelBody)
        channel = await service.create_channel(
            user, path.community_id, name=body.name, kind=body.kind, private=body.private,
            parent_id=body.parent_id, topic=body.topic, member_ids=body.member_ids)
        return json_response(ChannelReply(channel=channel), status=201)

    async def add_channel_member(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, ChannelPath)
        body = await read_body(request, AddChannelMemberBody)
        await service.add_channel_member(user, path.channel_id, body.user_id)
        return web.Response(status=204)

    async def open_direct(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        body = await read_body(request, OpenDirectBody)
        channel = await service.open_direct(user, body.user_ids)
        return json_response(ChannelReply(channel=channel), status=201)

    async def history(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, ChannelPath)
        query = query_op(request, FetchHistory, msgspec.structs.asdict(path))
        messages, has_more = await service.history(
            user, path.channel_id, before=query.before, after=query.after,
            around=query.around, limit=query.limit)
        return json_response(HistoryReply(messages=messages, has_more=has_more))

    api = rest_api(app)
    tag = "communities"
    api.route("POST", "/communities", create_community, tag=tag, status=201,
              summary="Create a community (the caller owns it; #general is created).",
              body=CreateCommunityBody, reply=CommunityCreated)
    api.route("GET", "/communities", list_communities, tag=tag,
              summary="The caller's communities.", reply=CommunitiesReply)
    api.route("POST", "/communities/{community_id}/invites", create_invite, tag=tag,
              summary="Create an invite code.", body=CreateInviteBody, body_required=False,
              reply=InviteCreated, status=201)
    api.route("POST", "/invites/{code}/join", join_invite, tag=tag,
              summary="Join the community of an invite.", reply=SnapshotReply,
              path_types={"code": InviteCode})
    api.route("GET", "/communities/{community_id}/members", list_members, tag=tag,
              summary="A page of members.", query=MembersQuery, reply=MembersReply)
    api.route("PATCH", "/communities/{community_id}/members/{user_id}", set_role, tag=tag,
              summary="Change a member's role.", body=SetRoleBody, reply=MemberReply)
    api.route("POST", "/communities/{community_id}/channels", create_channel, tag=tag,
              summary="Create a channel.", body=CreateChannelBody, reply=ChannelReply,
              status=201)
    api.route("POST", "/channels/{channel_id}/members", add_channel_member, tag=tag,
              summary="Add a member to a private channel.", body=AddChannelMemberBody,
              status=204)
    api.route("POST", "/dms", open_direct, tag=tag,
              summary="Open a DM (one other person, reused) or a group DM (2-9 others).",
              body=OpenDirectBody, reply=ChannelReply, status=201)
    api.route("GET", "/channels/{channel_id}/messages", history, tag=tag,
              summary="A page of a channel's history.", query=HistoryQuery,
              reply=HistoryReply)
