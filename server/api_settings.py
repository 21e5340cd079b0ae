"""REST routes the owner's settings page (web/settings.html) needed and nobody had:
``PATCH /communities/{id}`` (name, description), ``PATCH /channels/{id}`` (name, topic, position,
category), ``GET`` and ``DELETE /communities/{id}/invites[/{code}]``. Thin handlers over
:class:`rooms.chat.settings.CommunitySettings`, which holds the rules.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from protocol.community_admin import CommunityReply, InvitesReply
from protocol.models import Id
from protocol.rest import ChannelReply
from rooms.chat.settings import CommunitySettings
from server.api_auth import json_response, require_user
from server.auth import Authenticator
from server.rest.decoding import path_params, read_body
from server.rest.openapi import rest_api

InviteCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class UpdateCommunityBody(msgspec.Struct, kw_only=True):
    """What changes; fields left out keep their value."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    description: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class UpdateChannelBody(msgspec.Struct, kw_only=True):
    """What changes; fields left out keep their value. ``parent_id`` 0 takes the channel
    out of its category; ``position`` orders the sidebar (ascending)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    topic: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    parent_id: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] | None = None


class _CommunityPath(msgspec.Struct):
    community_id: Id


class _ChannelPath(msgspec.Struct):
    channel_id: Id


class _InvitePath(msgspec.Struct):
    community_id: Id
    code: InviteCode


def add_settings_routes(app: web.Application, auth: Authenticator,
                        settings: CommunitySettings) -> None:
    async def rename(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, _CommunityPath)
        body = await read_body(request, UpdateCommunityBody)
        community = await settings.update(user, path.community_id, name=body.name,
                                          description=body.description)
        return json_response(CommunityReply(community=community))

    async def update_channel(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, _ChannelPath)
        body = await read_body(request, UpdateChannelBody)
        channel = await settings.update_channel(user, path.channel_id, name=body.name,
                                                topic=body.topic, position=body.position,
                                                parent_id=body.parent_id)
        return json_response(ChannelReply(channel=channel))

    async def list_invites(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, _CommunityPath)
        return json_response(InvitesReply(invites=await settings.invites(
            user, path.community_id)))

    async def revoke_invite(request: web.Request) -> web.StreamResponse:
        user = await require_user(request, auth)
        path = path_params(request, _InvitePath)
        await settings.revoke_invite(user, path.community_id, path.code)
        return web.Response(status=204)

    api = rest_api(app)
    tag = "community settings"
    api.route("PATCH", "/communities/{community_id}", rename, tag=tag,
              summary="Change the community's name or description (MANAGE_COMMUNITY: "
                      "owner or admin).",
              body=UpdateCommunityBody, reply=CommunityReply)
    api.route("PATCH", "/channels/{channel_id}", update_channel, tag=tag,
              summary="Change a channel's name, topic, position or category "
                      "(MANAGE_CHANNELS); viewers get channel_update.",
              body=UpdateChannelBody, reply=ChannelReply)
    api.route("GET", "/communities/{community_id}/invites", list_invites, tag=tag,
              summary="The invites that can still be used, newest first "
                      "(MANAGE_COMMUNITY).", reply=InvitesReply)
    api.route("DELETE", "/communities/{community_id}/invites/{code}", revoke_invite, tag=tag,
              summary="Revoke an invite (MANAGE_COMMUNITY); it stops working at once.",
              status=204, path_types={"code": InviteCode})
