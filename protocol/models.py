"""Records that appear inside frames: users, communities, channels, messages.

These are the one wire schema for Hearth's domain objects, used by the gateway, the
REST API and every client. Schema evolution follows msgspec's rules: new fields are
added with defaults, no field is ever retyped or renamed.

Ids are positive integers below 2**53 so that JavaScript clients read them exactly.
Times are integer milliseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

Id = Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1, description="Positive integer id.")]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Per-channel position.")]
SessionSeq = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1,
                                         description="Per-session dispatch number.")]
Millis = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999,
                                     description="Milliseconds since the Unix epoch "
                                                 "(at most the end of year 9999).")]


class Role(enum.StrEnum):
    """A member's role in a community, from most to least privileged."""

    OWNER = "owner"
    ADMIN = "admin"
    MODERATOR = "moderator"
    MEMBER = "member"


ROLE_RANK: dict[Role, int] = {Role.OWNER: 3, Role.ADMIN: 2, Role.MODERATOR: 1, Role.MEMBER: 0}
"""Higher outranks lower; used by the permission checks."""


class ChannelKind(enum.StrEnum):
    """What a channel is. Threads hang off a text/announcement channel or a message."""

    TEXT = "text"
    ANNOUNCEMENT = "announcement"
    CATEGORY = "category"
    THREAD = "thread"
    DM = "dm"
    GROUP_DM = "group_dm"
    VOICE = "voice"
    """A voice room (members with ``CONNECT_VOICE`` join it with ``voice_join``); it
    also takes text messages like a text channel."""
    STAGE = "stage"
    """A stage: a voice room whose audience listens until a host lets them speak
    (live sessions)."""


class PresenceStatus(enum.StrEnum):
    """A user's presence. Others see ``online``, ``idle``, ``dnd`` or ``offline``;
    ``invisible`` is only ever chosen (with ``set_presence``): an invisible user looks
    ``offline`` to everyone else. Choosing ``offline`` is the same as ``invisible``."""

    ONLINE = "online"
    IDLE = "idle"
    DND = "dnd"
    INVISIBLE = "invisible"
    OFFLINE = "offline"


class User(msgspec.Struct, frozen=True, kw_only=True):
    """Public profile of an account (people and bots alike)."""

    id: Id
    username: str
    display_name: str
    bot: bool = False


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """Metadata of a file stored elsewhere (Hearth stores no file bodies in v1)."""

    url: Annotated[str, msgspec.Meta(max_length=2048)]
    filename: Annotated[str, msgspec.Meta(max_length=255)]
    content_type: Annotated[str, msgspec.Meta(max_length=255)] = "application/octet-stream"
    size: Annotated[int, msgspec.Meta(ge=0)] = 0
    width: int | None = None
    height: int | None = None


class ReactionCount(msgspec.Struct, frozen=True, kw_only=True):
    """One emoji on a message and how many members used it. Who: ``fetch_reactions``."""

    emoji: str
    count: int


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A chat message. ``seq`` is its gap-free position in its channel."""

    id: Id
    channel_id: Id
    seq: Seq
    author: User
    content: str
    created_at: Millis
    nonce: str | None = None
    reply_to_id: Id | None = None
    mention_user_ids: list[int] = []
    mention_roles: list[Role] = []
    mention_everyone: bool = False
    attachments: list[Attachment] = []
    reactions: list[ReactionCount] = []
    thread_id: Id | None = None
    edited_at: Millis | None = None
    deleted: bool = False


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    """A place messages are posted: text, announcement, thread, DM or group DM.

    ``community_id`` is None for DMs and group DMs. ``parent_id`` is the category of a
    channel or the channel a thread belongs to. ``last_seq`` is the newest message's seq.
    """

    id: Id
    kind: ChannelKind
    name: str
    community_id: Id | None = None
    parent_id: Id | None = None
    topic: str = ""
    private: bool = False
    archived: bool = False
    position: int = 0
    last_seq: Seq = 0
    thread_root_message_id: Id | None = None
    member_ids: list[int] = []
    """Members of a DM, group DM or thread (empty for community channels)."""
    slowmode_s: int = 0
    """Seconds a member must wait between two messages here (0: off); members with
    ``BYPASS_SLOWMODE`` are exempt. A send too soon fails with ``slowmode``."""
    locked: bool = False
    """Only members with ``MANAGE_MESSAGES`` or ``MODERATE`` may post (``channel_locked``)."""
    required_tier: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Members whose tier (``Member.tier``) is below this do not see the channel
    (0: everyone). Staff (``ADMINISTRATOR`` or ``MANAGE_CHANNELS``) always see it."""


class Community(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant: a community with its channels."""

    id: Id
    name: str
    owner_id: Id
    created_at: Millis = 0
    description: str = ""
    """What the community is about, in a sentence or two (set on the settings page)."""


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A user's membership of a community."""

    community_id: Id
    user: User
    role: Role
    joined_at: Millis = 0
    role_ids: list[int] = []
    """Custom roles (``CommunityRole.id``) held on top of the fixed ``role``."""
    tier: int = 0
    """Membership tier (set by an admin or the billing sidecar); gates channels."""


OverrideKind = Literal["everyone", "role", "member"]


class CommunityRole(msgspec.Struct, frozen=True, kw_only=True):
    """A custom role of a community: permission bits (``rooms.realtime.permissions.Permission``)
    a member holds on top of their fixed role. A higher ``position`` outranks a lower."""

    id: Id
    community_id: Id
    name: str
    """Unique in the community (case-insensitive)."""
    permissions: int
    """Permission bits the role grants (``Permission`` values, OR-ed)."""
    position: int = 0
    """Rank among custom roles; a fixed admin outranks every custom role."""
    color: int | None = None
    """0xRRGGBB, or None."""


class PermissionOverride(msgspec.Struct, frozen=True, kw_only=True):
    """Channel-level allow/deny bits for ``everyone`` (target_id 0), a custom ``role``
    or a ``member`` (user id). Resolution order: docs/moderation.md "Permissions"."""

    channel_id: Id
    kind: OverrideKind
    """``everyone``, ``role`` or ``member``."""
    target_id: int
    """0 for ``everyone``, a custom role id, or a user id."""
    allow: int = 0
    """Bits granted in this channel."""
    deny: int = 0
    """Bits taken away in this channel."""


class CommunitySnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What ``ready`` tells a member about one community: it, their role, and the
    channels they can see (private ones only if they are in them)."""

    community: Community
    role: Role
    channels: list[Channel]
    member_count: int = 0
    online_count: int = 0
    """Members online, idle or dnd (not invisible) when the snapshot was taken (in
    ``ready``; 0 in ``community_available``). ``presence_update`` keeps it current."""
    roles: list[CommunityRole] = []
    """The community's custom roles, by position."""
    role_ids: list[int] = []
    """The member's custom roles."""
    tier: int = 0
    """The member's tier (channels with a higher ``required_tier`` are hidden)."""
    permissions: int = 0
    """The member's community-level permission bits (fixed role united with custom
    roles); channel overrides may change them per channel."""
    lockdown: bool = False
    """The community is in lockdown (raid mode): joins are paused and new members or
    new accounts cannot post. ``community_moderation_update`` keeps it current."""
    lockdown_member_age_s: int = 0
    """While in lockdown: members who joined less than this many seconds ago cannot post."""
    lockdown_account_age_s: int = 0
    """While in lockdown: accounts younger than this many seconds cannot post."""
    timed_out_until: Millis | None = None
    """In ``ready``: when the member's running timeout in this community ends (Unix
    ms), so a client can disable its composer from the start; null when none.
    ``member_sanctioned`` keeps it current."""


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    """What others see of a user's presence (never ``invisible``). A user is online
    while any of their connections is; if the server holding their last connection
    dies, they are shown ``offline`` within a minute (about 48 s by default)."""

    user_id: Id
    status: PresenceStatus
    last_seen: Millis | None = None
    """When an ``offline`` user was last online (null if never, or not offline)."""


class ReadState(msgspec.Struct, frozen=True, kw_only=True):
    """Per-member, per-channel unread state."""

    channel_id: Id
    last_read_seq: Seq
    unread_count: int = 0
    mention_count: int = 0
