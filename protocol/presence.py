"""Presence on the gateway: a member's chosen status, the member list with presences,
and the batched ``presence_update`` event.

Served by ``rooms/realtime/presence.py`` (and ``rooms/realtime/redis_presence.py`` across nodes).
Presence is ephemeral: it is never stored in history and is skipped for congested
sessions.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.base import EventBase, Request, ResultBase
from protocol.models import Id, Member, Presence, PresenceStatus


class SetPresence(Request, tag="set_presence"):
    """Choose your presence, for all your sessions (kept between sessions). Others
    see it while any of your sessions is connected, and ``offline`` otherwise;
    ``invisible`` (or ``offline``) looks ``offline`` to them."""

    status: PresenceStatus


class FetchMembers(Request, tag="fetch_members"):
    """A page of a community's members with their presence, by ascending user id:
    start with ``after`` 0, then pass the last user id of the previous page."""

    community_id: Id
    after: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)] = 0
    """Return members whose user id is greater than this."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100
    """Members per page (1 to 100)."""


class SubscribePresence(Request, tag="subscribe_presence"):
    """Receive (or stop receiving) a large community's ``presence_update`` batches.

    Presence of communities with at most ``limits.presence_auto_max_members`` members
    reaches every member's session unasked. Above that, fanning every status change out
    to every member would cost the server more than everything else those members do,
    so sessions receive it only while subscribed (a client subscribes while it shows the
    member list), at most ``limits.max_presence_subscriptions`` communities at once.
    Subscriptions belong to the session and survive ``resume`` on the same process;
    send them again after ``resumed`` (harmless if still in place)."""

    community_id: Id
    subscribed: bool = True
    """True subscribes, false unsubscribes."""


class MembersResult(ResultBase, tag="members"):
    """A page of members and their presence (``fetch_members``)."""

    community_id: Id
    members: list[Member]
    presences: list[Presence]
    """The presence of each member of the page, in the same order."""
    online_count: int
    """Members of the community online, idle or dnd now."""
    has_more: bool
    """More members follow: ask again with ``after`` set to the last user id."""


class PresenceUpdated(EventBase, tag="presence_update"):
    """Members of a community changed presence. Batched: at most one per community
    every ~1.5 s, carrying everyone whose presence changed since the previous one (their
    latest presence; at most 500 users, more follow in the next batches). Ephemeral:
    skipped while your connection is congested or detached (so after a ``resume``, page
    ``fetch_members`` to refresh a member list you show)."""

    community_id: Id
    presences: list[Presence]
    online_count: int = 0
    """Members of the community online, idle or dnd after these changes."""


__all__ = [
    "FetchMembers",
    "MembersResult",
    "PresenceUpdated",
    "SetPresence",
    "SubscribePresence",
]
