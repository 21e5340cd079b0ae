"""Bodies of the REST API's replies (``/api/v1``), shared by the server and clients.

The websocket frames live in :mod:`protocol.frames`; these are the few REST replies a
client decodes into types. Same evolution rule: new fields with defaults only.
"""

from __future__ import annotations

import msgspec

from protocol.models import Channel, Community, CommunitySnapshot, User


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
