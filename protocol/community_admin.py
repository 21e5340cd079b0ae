"""Records of the owner's settings routes (REST, ``/api/v1``): invites and a renamed
community. New fields only with defaults, as everywhere in protocol/."""

from __future__ import annotations

import msgspec

from protocol.models import Community, Id, Millis


class Invite(msgspec.Struct, frozen=True, kw_only=True):
    """An invite code that can still be used."""

    code: str
    created_by: Id
    max_uses: int | None = None
    """None: unlimited."""
    uses: int = 0
    expires_at: Millis | None = None
    """None: never expires."""
    created_at: Millis = 0


class InvitesReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``GET /communities/{id}/invites``: usable invites, newest first."""

    invites: list[Invite]


class CommunityReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``PATCH /communities/{id}``."""

    community: Community
