"""Which domain events count as activity, and as what (pure: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.domain_events import (
    AttendanceChange,
    DomainEvent,
    LiveAttended,
    MemberJoined,
    MessageSent,
    ReactionAdded,
)
from protocol.sidecar import ActivityKind


@dataclass(frozen=True)
class Activity:
    community_id: int
    user_id: int
    kind: ActivityKind
    object_id: int | None
    at_ms: int | None
    """When it happened, if the event says; else the event's commit time."""


def activity_of(event: DomainEvent) -> Activity | None:
    """The activity an event records, or None (DMs, leaving, role changes...)."""
    if isinstance(event, MessageSent) and event.community_id is not None:
        return Activity(event.community_id, event.author_id, ActivityKind.MESSAGE,
                        event.message_id, event.at)
    if isinstance(event, ReactionAdded) and event.community_id is not None:
        return Activity(event.community_id, event.user_id, ActivityKind.REACTION,
                        event.message_id, None)
    if isinstance(event, LiveAttended) and event.change is AttendanceChange.JOINED:
        return Activity(event.community_id, event.user_id, ActivityKind.LIVE,
                        event.live_session_id, event.at)
    if isinstance(event, MemberJoined):
        return Activity(event.community_id, event.user_id, ActivityKind.JOINED,
                        None, None)
    return None
