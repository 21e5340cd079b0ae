"""Bodies of the REST API's replies (``/api/v1``), shared by the server and clients.

The websocket frames live in :mod:`protocol.frames`; these are the few REST replies a
client decodes into types. Same evolution rule: new fields with defaults only.
"""

from __future__ import annotations

import msgspec

from protocol.automod import AutomodRule
from protocol.models import (
    Channel,
    Community,
    CommunityRole,
    CommunitySnapshot,
    Member,
    Message,
    PermissionOverride,
    User,
)


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of register, login and refresh."""

    user: User
    access_token: str
    refresh_token: str
    expires_in: int
    """Seconds the access token stays valid."""


class BotCreated(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``POST /bots``: the bot account and its long-lived token."""

    user: User
    token: str


class CommunityCreated(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``POST /communities``: the community, its first channels, and the
    snapshot its owner's sessions receive."""

    community: Community
    channels: list[Channel]
    snapshot: CommunitySnapshot | None = None


class ProvisionedUser(msgspec.Struct, frozen=True, kw_only=True):
    """A bot account made by ``POST /loadtest/provision``, with its token."""

    id: int
    username: str
    token: str


class ProvisionedChannel(msgspec.Struct, frozen=True, kw_only=True):
    """A load-test room and who is in it."""

    id: int
    member_ids: list[int]


class Provisioned(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``POST /loadtest/provision``."""

    community_id: int
    users: list[ProvisionedUser]
    channels: list[ProvisionedChannel]


class MeReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``GET /users/@me``."""

    user: User


class CommunitiesReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``GET /communities``: every community the caller belongs to."""

    communities: list[CommunitySnapshot]


class InviteCreated(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``POST /communities/{community_id}/invites``."""

    code: str


class SnapshotReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``POST /invites/{code}/join``: the community just joined."""

    snapshot: CommunitySnapshot


class MembersReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of members by ascending user id."""

    members: list[Member]


class MemberReply(msgspec.Struct, frozen=True, kw_only=True):
    """One member, as changed."""

    member: Member


class ChannelReply(msgspec.Struct, frozen=True, kw_only=True):
    """One channel, as created or changed."""

    channel: Channel


class HistoryReply(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a channel's messages, oldest first."""

    messages: list[Message]
    has_more: bool


class RolesReply(msgspec.Struct, frozen=True, kw_only=True):
    """A community's custom roles."""

    roles: list[CommunityRole]


class RoleReply(msgspec.Struct, frozen=True, kw_only=True):
    """One custom role, as created or changed."""

    role: CommunityRole


class OverridesReply(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's permission overrides."""

    overrides: list[PermissionOverride]


class OverrideReply(msgspec.Struct, frozen=True, kw_only=True):
    """One permission override as set (``null`` when allow and deny are both 0)."""

    override: PermissionOverride | None


class AutomodRulesReply(msgspec.Struct, frozen=True, kw_only=True):
    """A community's automod rules."""

    rules: list[AutomodRule]


class AutomodRuleReply(msgspec.Struct, frozen=True, kw_only=True):
    """One automod rule."""

    rule: AutomodRule
