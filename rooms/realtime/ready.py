"""Opening and resuming sessions: the ``ready`` snapshot, replay, and resume elsewhere.

Identify costs a fixed handful of queries whatever the size of the member's
communities: memberships with their member counts, the member's roles, tiers and the
overrides that concern them, the channels the member may see (index-driven candidates
in SQL, resolved by :mod:`rooms.realtime.access`), DMs, and read states.

Resume finds the session in this process (and replays from its in-memory buffer), or,
with a :class:`SessionMirror`, claims it from Redis after its process died or the client
moved. Message creates are not mirrored, so a resume elsewhere rebuilds what the client
missed from two sources (:meth:`SessionOpener.resume_elsewhere`): the mirrored entries
after the client's seq, and the creates fetched from PostgreSQL after the client's
position in each channel (the positions it sends; for channels it does not name, the
mirror's cursors, lowered by how far the client may be behind them), merged so that
each entry tied to a channel comes after the creates it followed. The replay is
numbered anew after the newest seq either side knows, stored in the mirror under those
numbers before it goes out, then the session goes live.

With a mirror, a copy held here is used only after Redis confirms it is still the
owner (the client may have resumed on another node since, and come back): a stale copy
is dropped and the session claimed from Redis instead, so a client bouncing between
nodes resumes every time. A claim tells the previous owner at once (a notice on its
process topic), which drops its copy and closes its socket, if any, with 4006.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from persistence import channels as channels_db
from persistence import communities as communities_db
from persistence import moderation as moderation_db
from persistence import read_states as read_states_db
from persistence import roles as roles_db
from persistence.database import Database
from protocol.chat import MessageCreated
from protocol.codec import Codec
from protocol.codes import CloseCode
from protocol.frames import Ready
from protocol.limits import Limits
from protocol.models import Channel, CommunitySnapshot, Message, User
from rooms.moderation.moderation_view import MODERATION
from rooms.realtime.access import AccessResolver, fill_view, visible_of
from rooms.realtime.hub import Hub
from rooms.realtime.presence import PRESENCE, PresenceService
from rooms.realtime.session_mirror import (
    MirroredEntry,
    MirroredSession,
    SessionMirror,
    decode_takeover,
    encode_takeover,
    takeover_topic,
)
from rooms.realtime.sessions import NOT_STORED, AccessView, Session, SessionRegistry, Sink

log = logging.getLogger(__name__)

ABANDONED = "the client went away"
"""Why a resume stopped early: its client closed the connection while it waited."""

FetchMissing = Callable[[int, int, int], Awaitable[list[Message]]]


async def community_snapshot(db: Database, community_id: int, user_id: int) -> \
        CommunitySnapshot | None:
    """What a member is told about one community (``community_available``, REST): the
    channels they may see resolved by :mod:`rooms.realtime.access`, the community's custom roles
    and their own roles, tier and bits."""
    async with db.connection() as conn:
        community = await communities_db.get_community(conn, community_id)
        access = await roles_db.member_access(conn, community_id, user_id)
        if community is None or access is None:
            return None
        overrides = await roles_db.overrides_for_member(conn, user_id, [community_id])
        listed = await channels_db.private_channel_ids_for_user(conn, user_id)
        candidates = await channels_db.visible_community_channels(
            conn, user_id, community_id=community_id)
        roles = await roles_db.list_roles(conn, community_id)
        count = await communities_db.member_count(conn, community_id)
        lockdown = await moderation_db.get_lockdown(conn, community_id)
    view = AccessView()
    fill_view(view, {community_id: access}, overrides, listed)
    member = view.members[community_id]
    return CommunitySnapshot(community=community, role=access.role, member_count=count,
                             channels=visible_of(view, user_id, candidates), roles=roles,
                             role_ids=sorted(member.role_ids), tier=member.tier,
                             permissions=int(member.base),
                             lockdown=bool(lockdown and lockdown.enabled),
                             lockdown_member_age_s=lockdown.member_age_s if lockdown else 0,
                             lockdown_account_age_s=lockdown.account_age_s if lockdown else 0)


class SessionOpener:
    """Builds sessions for identify and finds them for resume."""

    def __init__(self, db: Database, hub: Hub, registry: SessionRegistry, limits: Limits,
                 mirror: SessionMirror | None = None,
                 fetch_missing: FetchMissing | None = None,
                 presence: PresenceService | None = None,
                 access: AccessResolver | None = None,
                 on_close: Sequence[Callable[[Session], None]] = ()) -> None:
        self.db = db
        self.access = access or AccessResolver(db)
        """Resolves the channels a member may see and fills the session's access view."""
        self.hub = hub
        self.registry = registry
        self.limits = limits
        self.mirror = mirror
        self.fetch_missing = fetch_missing
        self.presence = presence
        """Told when a session gains or loses its socket (rooms/realtime/presence.py)."""
        self.on_close = list(on_close)
        """Told when a session is forgotten here for good (voice rooms leave); must
        not block."""
        self._notices: set[asyncio.Future[None]] = set()
        """Takeover notices being published (kept so they are not collected midway)."""
        if mirror is not None:
            hub.listen(takeover_topic(mirror.owner), self._taken_over)

    async def _load_view(self, session: Session) -> tuple[list[CommunitySnapshot],
                                                           list[Channel]]:
        """Fill the session's roles and channels from PostgreSQL (a few queries)."""
        user_id = session.user.id
        async with self.db.connection() as conn:
            memberships = await communities_db.memberships_with_counts(conn, user_id)
            visible = await self.access.load_view(conn, session)
            roles = await roles_db.roles_of_communities(conn, [c.id for c, _, _ in memberships])
            direct = await channels_db.direct_channels(conn, user_id)
            sanctions = await moderation_db.session_moderation(conn, user_id)
        view = session.view(MODERATION)
        view.account_created_ms = sanctions.account_created_ms
        view.joined_ms = dict(sanctions.joined_ms)
        view.timeouts = dict(sanctions.timeouts)
        view.lockdowns = dict(sanctions.lockdowns)
        by_community: dict[int, list[Channel]] = {}
        for channel in visible:
            if channel.community_id is not None:
                by_community.setdefault(channel.community_id, []).append(channel)
        snapshots: list[CommunitySnapshot] = []
        members = session.access.members
        for community, role, count in memberships:
            channels = by_community.get(community.id, [])
            member = members.get(community.id)
            if member is None:  # joined between the two reads: next refresh brings it
                continue
            lockdown = sanctions.lockdowns.get(community.id)
            snapshots.append(CommunitySnapshot(
                community=community, role=role, channels=channels, member_count=count,
                roles=roles.get(community.id, []), role_ids=sorted(member.role_ids),
                tier=member.tier, permissions=int(member.base),
                lockdown=lockdown is not None,
                lockdown_member_age_s=lockdown[0] if lockdown else 0,
                lockdown_account_age_s=lockdown[1] if lockdown else 0,
                timed_out_until=sanctions.timeouts.get(community.id)))
            session.roles[community.id] = role
            if count <= self.limits.presence_auto_max_members:
                session.view(PRESENCE).communities.add(community.id)
            for channel in channels:
                session.channels[channel.id] = channel
        for channel in direct:
            session.channels[channel.id] = channel
        return snapshots, direct

    async def open(self, user: User, codec: Codec, sink: Sink) -> tuple[Session, Ready]:
        """Load the member's world, register a session, subscribe it, return ``ready``."""
        session = Session(user, codec, self.limits.replay_buffer_events)
        snapshots, direct = await self._load_view(session)
        roles_by_channel = {c.id: (r.value if (r := session.role_in(c)) else None)
                            for c in session.channels.values()}
        async with self.db.connection() as conn:
            read_states = await read_states_db.read_states(
                conn, user.id, [(c.id, c.last_seq) for c in session.channels.values()],
                roles_by_channel)
        ready = Ready(session_id=session.session_id, user=user, communities=snapshots,
                      private_channels=direct, read_states=read_states)
        if self.presence is not None:  # presence: the user is online, with the counts
            status, online = await self.presence.connect(session)
            ready = msgspec.structs.replace(ready, status=status, communities=[
                msgspec.structs.replace(s, online_count=online.get(s.community.id, 0))
                for s in snapshots])
        for channel in session.channels.values():
            session.set_cursor(channel.id, channel.last_seq)
        session.sink = sink
        if self.mirror is not None:
            session.mirror = self.mirror
            # Resumable anywhere from `ready` on. Not attached yet, so nothing can be
            # dispatched before `ready` meanwhile.
            await self.mirror.written(session)
        self.registry.add(session)
        delivered = self.hub.attach(session)
        # Messages the hub delivered here between reading the snapshot and attaching
        # went to the other local subscribers but not to this session: hold its
        # deliveries and fetch that window (the gateway calls catch_up after ready).
        behind = {cid: upto for cid, upto in delivered.items()
                  if upto > session.cursors.get(cid, upto)}
        if behind:
            session.hold(behind)
        return session, ready

    async def resume(self, user: User, session_id: str, seq: int, codec: Codec,
                     sink: Sink, positions: dict[int, int] | None = None,
                     abandoned: Callable[[], bool] = lambda: False) -> \
            tuple[Session, list[bytes], bool] | str:
        """Reattach a session: the copy held here if it is still the owner, else (with
        a mirror) the one in Redis. Returns the session, the frames to replay and
        whether it came from Redis (it is then *held*: call :meth:`catch_up` once the
        replay is written), or why not. ``abandoned`` says the client has gone: checked
        before the claim and before loading the view, so an attempt its client gave up
        on claims nothing (a late claim would take the session from the connection the
        client resumed on meanwhile) and loads nothing."""
        session = self.registry.get(session_id)
        if session is not None and session.user.id != user.id:
            return "unknown or expired session"
        if session is not None and not session.is_superseded and self.mirror is not None \
                and await self.mirror.owns(session) is False:
            session.superseded()  # claimed elsewhere; the notice is still on its way
        if session is not None and session.is_superseded:
            self.close(session)  # a stale copy is never resumed from
            session = None
        if session is None:
            elsewhere = await self.resume_elsewhere(user, session_id, seq, codec, sink,
                                                    positions, abandoned)
            return elsewhere if isinstance(elsewhere, str) else (*elsewhere, True)
        here = self._resume_here(session, seq, codec, sink)
        return here if isinstance(here, str) else (*here, False)

    def _resume_here(self, session: Session, seq: int, codec: Codec,
                     sink: Sink) -> tuple[Session, list[bytes]] | str:
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
        if self.presence is not None:
            self.presence.attach(session)
        return session, replay

    async def resume_elsewhere(self, user: User, session_id: str, seq: int, codec: Codec,
                               sink: Sink, positions: dict[int, int] | None = None,
                               abandoned: Callable[[], bool] = lambda: False) -> \
            tuple[Session, list[bytes]] | str:
        """Take over a session another process held (it may be dead) from the mirror.

        The replay is the mirrored entries after ``seq`` merged with the message
        creates fetched from PostgreSQL after each channel's starting position
        (:func:`starting_positions`) up to its head: before an entry tied to channel C
        at position p come the fetched creates of C up to p; after the last entry, the
        rest (per channel in seq order, channels interleaved by message id). It is
        numbered from ``max(seq, mirrored seq) + 1`` (a client may hold creates newer
        than the mirror's seq; the mirror's list holds entries up to its seq) and stored
        in the mirror under those numbers (replacing the list) before it goes out, so a
        second failover resumes from what the client then has.

        The session is returned *holding* its live deliveries: call :meth:`catch_up`
        once the replay is written."""
        if self.mirror is None:
            return "unknown or expired session"
        if abandoned():
            return ABANDONED
        mirrored = await self.mirror.claim(session_id, user.id, codec.encoding.value)
        if isinstance(mirrored, str):
            return mirrored
        await self._announce_takeover(session_id, mirrored)
        if seq < mirrored.floor:
            await self.mirror.forget(session_id, mirrored.epoch)
            return "too far behind; identify and fetch history"
        if abandoned():  # claimed (the epoch moved on; Redis still has it all): a
            return ABANDONED  # later resume claims it again, from anywhere
        session = Session(user, codec, self.limits.replay_buffer_events, session_id=session_id)
        session.epoch = mirrored.epoch
        await self._load_view(session)
        session.hold()
        self.registry.add(session)
        # Live deliveries wait (held) from here; the fetch reaches at least as far as
        # the hub had delivered here when the session attached.
        delivered_here = self.hub.attach(session)
        starts = starting_positions(session, mirrored, seq, positions)
        fetched: dict[int, list[Message]] = {}
        try:
            for channel in list(session.channels.values()):
                upto = max(channel.last_seq, delivered_here.get(channel.id, 0))
                start = min(starts[channel.id], upto)
                found = await self.fetch_missing(channel.id, start, upto) \
                    if self.fetch_missing is not None and start < upto else []
                fetched[channel.id] = found
                session.cursors[channel.id] = found[-1].seq if found else start
        except Exception:
            self.close(session)  # nothing written: a retry claims it again, unchanged
            raise
        merged = merge_replay(mirrored, seq, fetched, codec)
        base = max(seq, mirrored.seq)
        numbered = [(base + i, item) for i, item in enumerate(merged, start=1)]
        session.load_replay([(n, body) for n, (body, _, _) in numbered],
                            base + len(numbered), floor=seq)
        session.unmirrored = [(n, body, channel_id, position)
                              for n, (body, channel_id, position) in numbered
                              if position != NOT_STORED]
        session.changed_cursors = dict(session.cursors)
        session.rewrite_mirror = True
        session.mirror = self.mirror
        # Write-ahead: the renumbered entries are in Redis before the replay goes out
        # (no socket is attached yet, so the write sends nothing itself).
        await self.mirror.written(session)
        if session.is_superseded:  # claimed again meanwhile (its write was refused)
            self.close(session)
            return "session resumed on another connection"
        session.sink = sink
        if self.presence is not None:
            self.presence.attach(session)
        return session, [codec.dispatch_frame(n, body) for n, (body, _, _) in numbered]

    async def _announce_takeover(self, session_id: str, mirrored: MirroredSession) -> None:
        """Tell the previous owner that its copy is superseded, so that it stops now
        rather than at its next refused write. Nothing is sent when there was no owner
        or this process was it (handled here directly). The publish is not waited for:
        the notice is only a shortcut (the epoch in Redis already fences the old copy,
        and :meth:`resume` checks ownership before using a copy), and in a reconnect
        storm the previous owner is usually the dead process, so waiting for the bus
        round trip would only delay the resume."""
        assert self.mirror is not None
        notice = encode_takeover(session_id, mirrored.epoch)
        previous = mirrored.previous_owner
        if previous == self.mirror.owner:
            self._taken_over(notice)
        elif previous:
            task = asyncio.ensure_future(self._publish_takeover(previous, session_id, notice))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)

    async def _publish_takeover(self, previous: str, session_id: str, notice: bytes) -> None:
        try:
            await self.hub.bus.publish(takeover_topic(previous), notice)
        except Exception as exc:  # it stops at its next write instead
            log.warning("could not tell %s that session %s moved (%s: %s)", previous,
                        session_id, type(exc).__name__, exc)

    def _taken_over(self, payload: bytes) -> None:
        """A session held here was claimed by a later epoch: stop this copy (its socket,
        if any, is closed with 4006) and forget it."""
        notice = decode_takeover(payload)
        if notice is None:
            return
        session = self.registry.get(notice[0])
        if session is None or session.epoch >= notice[1]:
            return
        session.superseded()
        self.close(session)

    async def catch_up(self, session: Session) -> int:
        """After an identify that attached to channels the hub was already carrying:
        messages delivered here between its snapshot and attaching, from PostgreSQL;
        then (also after a resume elsewhere, whose replay fetched what it missed)
        whatever arrived meanwhile. Returns how many were fetched."""
        first: list[tuple[bytes, int, int]] = []
        try:
            if self.fetch_missing is not None:
                upto_by_channel = session.catch_up_upto or {}
                for channel in list(session.channels.values()):
                    if channel.id not in upto_by_channel:
                        continue  # at its snapshot (a resume elsewhere fetched already)
                    cursor = session.cursors.get(channel.id, channel.last_seq)
                    upto = max(channel.last_seq, upto_by_channel[channel.id])
                    if cursor >= upto:
                        continue
                    for message in await self.fetch_missing(channel.id, cursor, upto):
                        body = session.codec.encode_event(MessageCreated(message=message))
                        first.append((body, channel.id, message.seq))
        except Exception:
            log.exception("catch-up for resumed session %s failed", session.session_id)
        session.release(first)
        return len(first)

    def detach(self, session: Session, now: float) -> None:
        """The socket closed: keep the session resumable for the resume window."""
        session.sink = None
        session.detached_at = now
        if self.presence is not None:
            self.presence.detach(session)

    def close(self, session: Session) -> None:
        """Forget a session here (expired, invalidated, closed, or taken over)."""
        self.hub.detach(session)
        if self.registry.get(session.session_id) is session:
            self.registry.remove(session.session_id)
        if self.presence is not None:
            self.presence.detach(session)
        for callback in self.on_close:
            callback(session)

    async def forget(self, session: Session) -> None:
        """The session ended for good (the client closed normally): drop its mirror,
        unless another process claimed it meanwhile (checked in Redis, not only by the
        local mark: the takeover notice may have been lost)."""
        self.close(session)
        if self.mirror is not None and not session.is_superseded:
            await self.mirror.forget(session.session_id, session.epoch)


def starting_positions(session: Session, mirrored: MirroredSession, seq: int,
                       positions: dict[int, int] | None) -> dict[int, int]:
    """Per channel of the resumed session, the newest message seq the client has: the
    position it sent; else the mirror's cursor, lowered by how many dispatches the
    client may lack of those the cursors had counted (the cursors were written at
    session seq ``mirrored.cursors_at``; each create took one seq, so a client at
    ``seq`` lacks at most ``cursors_at - seq`` creates of any channel) and raised to the
    position of any mirrored entry the client did get (it had every create before
    it); else the channel's snapshot seq (a channel the old session never wrote).
    Without positions this may start below what the client has (duplicates it drops
    by channel and seq), never above it."""
    lag = max(0, mirrored.cursors_at - seq)
    seen: dict[int, int] = {}
    for entry in mirrored.entries:
        if entry.seq <= seq and entry.channel_id:
            seen[entry.channel_id] = max(seen.get(entry.channel_id, 0), entry.position)
    given = positions or {}
    starts: dict[int, int] = {}
    for channel in session.channels.values():
        cid = channel.id
        if cid in given:
            starts[cid] = given[cid]
        elif cid in mirrored.cursors:
            starts[cid] = max(mirrored.cursors[cid] - lag, seen.get(cid, 0), 0)
        else:
            starts[cid] = channel.last_seq
    return starts


def merge_replay(mirrored: MirroredSession, seq: int, fetched: dict[int, list[Message]],
                 codec: Codec) -> list[tuple[bytes, int, int]]:
    """The replay of a resume elsewhere, in order, as (body, channel id, position) with
    position :data:`NOT_STORED` for a fetched create: mirrored entries after ``seq``,
    each preceded by the fetched creates of its channel up to its position; then the
    remaining creates (each channel in seq order, channels interleaved by message id)."""
    queues = {cid: list(reversed(found)) for cid, found in fetched.items() if found}
    out: list[tuple[bytes, int, int]] = []

    def create(message: Message) -> tuple[bytes, int, int]:
        return (codec.encode_event(MessageCreated(message=message)), message.channel_id,
                NOT_STORED)

    entry: MirroredEntry
    for entry in mirrored.entries:
        if entry.seq <= seq:
            continue
        queue = queues.get(entry.channel_id) if entry.channel_id else None
        while queue and queue[-1].seq <= entry.position:
            out.append(create(queue.pop()))
        out.append((entry.body, entry.channel_id, entry.position))
    rest = [list(reversed(queue)) for queue in queues.values() if queue]
    out.extend(create(m) for m in heapq.merge(*rest, key=lambda m: m.id))
    return out
