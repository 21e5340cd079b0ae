"""Opening and resuming sessions: the ``ready`` snapshot and the replay on ``resume``."""

from __future__ import annotations

from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import read_states as read_states_db
from persistence.database import Database
from protocol.codec import Codec
from protocol.codes import CloseCode
from protocol.frames import Ready
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind, CommunitySnapshot, Role, User
from rooms.hub import Hub
from rooms.permissions import can_view
from rooms.sessions import Session, SessionRegistry, Sink


def visible_channels(all_channels: list[Channel], role: Role | None,
                     listed: set[int]) -> list[Channel]:
    """The channels of one community a member may see, parents before their threads."""
    by_id = {c.id: c for c in all_channels}
    visible: list[Channel] = []
    for channel in all_channels:
        parent = by_id.get(channel.parent_id) if channel.kind is ChannelKind.THREAD \
            and channel.parent_id else None
        if can_view(channel, role, channel.id in listed, parent):
            visible.append(channel)
    return visible


async def community_snapshot(db: Database, community_id: int, user_id: int) -> \
        CommunitySnapshot | None:
    """What a member is told about one community (``ready``, ``community_available``)."""
    async with db.connection() as conn:
        community = await communities_db.get_community(conn, community_id)
        role = await communities_db.get_role(conn, community_id, user_id)
        if community is None or role is None:
            return None
        listed = await channels_db.private_channel_ids_for_user(conn, user_id)
        channels = await channels_db.community_channels(conn, community_id)
        count = await communities_db.member_count(conn, community_id)
    return CommunitySnapshot(community=community, role=role, member_count=count,
                             channels=visible_channels(channels, role, listed))


class SessionOpener:
    """Builds sessions for identify and finds them for resume."""

    def __init__(self, db: Database, hub: Hub, registry: SessionRegistry, limits: Limits) -> None:
        self.db = db
        self.hub = hub
        self.registry = registry
        self.limits = limits

    async def open(self, user: User, codec: Codec, sink: Sink) -> tuple[Session, Ready]:
        """Load the member's world, register a session, subscribe it, return ``ready``."""
        session = Session(user, codec, self.limits.replay_buffer_events)
        snapshots: list[CommunitySnapshot] = []
        async with self.db.connection() as conn:
            listed = await channels_db.private_channel_ids_for_user(conn, user.id)
            memberships = await communities_db.memberships(conn, user.id)
            roles_by_channel: dict[int, str | None] = {}
            for community, role in memberships:
                channels = visible_channels(
                    await channels_db.community_channels(conn, community.id), role, listed)
                count = await communities_db.member_count(conn, community.id)
                snapshots.append(CommunitySnapshot(community=community, role=role,
                                                   channels=channels, member_count=count))
                session.roles[community.id] = role
                for channel in channels:
                    session.channels[channel.id] = channel
                    roles_by_channel[channel.id] = role.value
            direct = await channels_db.direct_channels(conn, user.id)
            for channel in direct:
                session.channels[channel.id] = channel
                roles_by_channel[channel.id] = None
            read_states = await read_states_db.read_states(
                conn, user.id, [(c.id, c.last_seq) for c in session.channels.values()],
                roles_by_channel)
        ready = Ready(session_id=session.session_id, user=user, communities=snapshots,
                      private_channels=direct, read_states=read_states)
        session.sink = sink
        self.registry.add(session)
        self.hub.attach(session)
        return session, ready

    def resume(self, user: User, session_id: str, seq: int, codec: Codec,
               sink: Sink) -> tuple[Session, list[bytes]] | str:
        """Reattach a detached session; returns it and the frames to replay, or why not."""
        session = self.registry.get(session_id)
        if session is None or session.user.id != user.id:
            return "unknown or expired session"
        if session.codec is not codec:
            return "resume must use the session's encoding"
        replay = session.replay_after(seq)
        if replay is None:
            self.close(session)
            return "too far behind; identify and fetch history"
        if session.sink is not None:
            # The old socket is still open (a half-dead connection): take over.
            old = session.sink
            session.sink = None
            old.fail(CloseCode.SESSION_INVALID, "session resumed on another connection")
        session.sink = sink
        session.detached_at = None
        return session, replay

    def detach(self, session: Session, now: float) -> None:
        """The socket closed: keep the session resumable for the resume window."""
        session.sink = None
        session.detached_at = now

    def close(self, session: Session) -> None:
        """Forget a session for good (expired, invalidated or closed normally)."""
        self.hub.detach(session)
        self.registry.remove(session.session_id)
