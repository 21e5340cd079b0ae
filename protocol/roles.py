"""Permissions on the gateway: custom roles, channel overrides and membership tiers.

Permission bits are ``rooms.realtime.permissions.Permission`` values (docs/moderation.md,
"Permissions"). Nobody grants bits they lack or manages a role at or above their own
highest role. Every change lands in the audit log with ``reason`` and takes effect at
once for connected members on every node (``permissions_update``, then
``channel_create`` / ``channel_delete`` for channels gained or lost). Served by
``rooms/moderation/roles.py``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.base import EventBase, Reason, Request, ResultBase
from protocol.models import CommunityRole, Id, Member, OverrideKind, PermissionOverride

RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Bits = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Permission bits.")]
Color = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFF, description="0xRRGGBB.")]
Tier = Annotated[int, msgspec.Meta(ge=0, le=1_000_000, description="Membership tier.")]


class FetchRoles(Request, tag="fetch_roles"):
    """The community's custom roles (any member) -> ``roles``."""

    community_id: Id


class CreateRole(Request, tag="create_role"):
    """Create a custom role (``MANAGE_ROLES``) -> ``role``. ``position`` defaults to
    just below the actor's highest role; it must be below it."""

    community_id: Id
    name: RoleName
    """Unique in the community (case-insensitive)."""
    permissions: Bits = 0
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    """Rank among custom roles (higher outranks lower)."""
    color: Color | None = None
    reason: Reason | None = None


class UpdateRole(Request, tag="update_role"):
    """Change a custom role (``MANAGE_ROLES``, below your highest role) -> ``role``.
    Fields left out keep their value; ``clear_color`` removes the color."""

    role_id: Id
    name: RoleName | None = None
    """New name (unique in the community, case-insensitive)."""
    permissions: Bits | None = None
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    """New rank among custom roles; must stay below your highest role."""
    color: Color | None = None
    clear_color: bool = False
    """True removes the role's color."""
    reason: Reason | None = None


class DeleteRole(Request, tag="delete_role"):
    """Delete a custom role, its assignments and its overrides (``MANAGE_ROLES``)."""

    role_id: Id
    reason: Reason | None = None


class SetMemberRoles(Request, tag="set_member_roles"):
    """Replace a member's custom roles (``MANAGE_ROLES``; only roles below your highest,
    on a member below you) -> ``member``."""

    community_id: Id
    user_id: Id
    role_ids: list[Id]
    reason: Reason | None = None


class FetchChannelOverrides(Request, tag="fetch_channel_overrides"):
    """A channel's overrides (``MANAGE_ROLES`` or ``MANAGE_CHANNELS``) -> ``overrides``."""

    channel_id: Id


class SetChannelOverride(Request, tag="set_channel_override"):
    """Set the allow/deny bits of ``everyone`` (``target_id`` 0), a custom ``role`` or
    a ``member`` in a channel (``MANAGE_ROLES`` and ``MANAGE_CHANNELS``; only bits you
    hold) -> ``override``. Threads follow their parent: set it there."""

    channel_id: Id
    kind: OverrideKind
    """``everyone``, ``role`` or ``member``."""
    target_id: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    """0 for ``everyone``, a custom role id, or a user id."""
    allow: Bits = 0
    deny: Bits = 0
    reason: Reason | None = None


class ClearChannelOverride(Request, tag="clear_channel_override"):
    """Remove an override (same rights as setting it)."""

    channel_id: Id
    kind: OverrideKind
    """``everyone``, ``role`` or ``member``."""
    target_id: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    """0 for ``everyone``, a custom role id, or a user id."""
    reason: Reason | None = None


class SetMemberTier(Request, tag="set_member_tier"):
    """Set a member's tier (``MANAGE_ROLES``; the billing sidecar uses the REST form)
    -> ``member``."""

    community_id: Id
    user_id: Id
    tier: Tier
    reason: Reason | None = None


class SetChannelTier(Request, tag="set_channel_tier"):
    """Set the tier a member needs to see a channel (``MANAGE_CHANNELS``; 0: none)
    -> ``channel``."""

    channel_id: Id
    tier: Tier
    reason: Reason | None = None


PERMISSION_REQUEST_TYPES: tuple[type[Request], ...] = (
    FetchRoles, CreateRole, UpdateRole, DeleteRole, SetMemberRoles, FetchChannelOverrides,
    SetChannelOverride, ClearChannelOverride, SetMemberTier, SetChannelTier,
)
"""The permission requests (served by rooms/moderation/roles.py)."""


class RolesResult(ResultBase, tag="roles"):
    community_id: Id
    roles: list[CommunityRole]
    """Highest position first."""


class RoleResult(ResultBase, tag="role"):
    role: CommunityRole
    """The role in its new state."""


class MemberResult(ResultBase, tag="member"):
    member: Member
    """The member in their new state (custom roles, tier)."""


class OverridesResult(ResultBase, tag="overrides"):
    channel_id: Id
    overrides: list[PermissionOverride]
    """Every override of the channel."""


class OverrideResult(ResultBase, tag="override"):
    override: PermissionOverride
    """The override in its new state."""


class PermissionsUpdated(EventBase, tag="permissions_update"):
    """Roles, overrides or tiers changed in a community (for everyone, or for
    ``user_id`` only: then it goes to that member alone). Your permissions there are
    already re-resolved: ``channel_create`` / ``channel_delete`` follow for channels
    you gained or lost. Re-read roles with ``fetch_roles`` if you show them."""

    community_id: Id
    user_id: Id | None = None


__all__ = [
    "PERMISSION_REQUEST_TYPES",
    "Bits",
    "ClearChannelOverride",
    "Color",
    "CreateRole",
    "DeleteRole",
    "FetchChannelOverrides",
    "FetchRoles",
    "MemberResult",
    "OverrideResult",
    "OverridesResult",
    "PermissionsUpdated",
    "RoleName",
    "RoleResult",
    "RolesResult",
    "SetChannelOverride",
    "SetChannelTier",
    "SetMemberRoles",
    "SetMemberTier",
    "Tier",
    "UpdateRole",
]
