"""Gateway sessions: what a connected member can see, and what they were sent.

A :class:`Session` outlives its websocket: when the socket drops, the session stays
*detached* for ``limits.resume_window_ms``, still numbering and buffering the events
addressed to it, so a client that reconnects and sends ``resume`` receives exactly what
it missed, in order. The replay buffer is bounded (``limits.replay_buffer_events``);
a client further behind than that is told to start over.

The session's view of the member's communities, roles and visible channels is loaded
from PostgreSQL at identify and then kept current by the control events the hub
applies (channel created, access granted, role changed...). The gateway's permission
checks read it, so they cost no database round-trip on the hot path.
"""

from __future__ import annotations

import collections
import secrets
from typing import Protocol, TypeVar

from protocol.codec import Codec
from protocol.codes import CloseCode
from protocol.models import Channel, ChannelKind, Role, User
from rooms.realtime.bus import channel_topic, community_topic, user_topic
from rooms.realtime.control import SessionView, ViewKey
from rooms.realtime.permissions import Override, Permission

V = TypeVar("V", bound=SessionView)

Entry = tuple[int, bytes, int, int]
"""(session seq, event body, channel id or 0, position): the position is the channel's
newest message seq delivered before the event, or :data:`NOT_STORED` for a message create
that only waits behind mirrored entries to keep the socket order."""
NOT_STORED = -1


class Sink(Protocol):
    """Where a session's frames go: the live websocket (server/gateway.py)."""

    def write(self, frame: bytes) -> None:
        """Queue one complete protocol frame; never blocks."""

    def fail(self, code: CloseCode, reason: str) -> None:
        """Close the connection with ``code`` (e.g. slow consumer)."""

    def congested(self) -> bool:
        """True when the client is behind: ephemeral events are skipped for it."""


class Mirror(Protocol):
    """Write-ahead copy, for resume on another node, of what a session received that
    PostgreSQL cannot replay: everything but message creates
    (rooms/realtime/session_mirror.py)."""

    def mark_dirty(self, session: Session) -> None: ...


class MemberView:
    """One community as the member's permissions see it (rooms/realtime/access.py)."""

    __slots__ = ("base", "role", "role_ids", "tier")

    def __init__(self, *, role: Role, role_ids: frozenset[int], tier: int,
                 base: Permission) -> None:
        self.role = role
        self.role_ids = role_ids
        self.tier = tier
        self.base = base
        """Community-level bits: the fixed role united with the custom roles."""


class AccessView:
    """What a session knows to resolve its permissions without a query
    (rooms/realtime/access.py): loaded at identify, re-read for one community when a
    ``permissions_update`` control event arrives."""

    __slots__ = ("bits", "listed", "members", "override_community", "overrides")

    def __init__(self) -> None:
        self.members: dict[int, MemberView] = {}
        self.overrides: dict[int, list[Override]] = {}
        """channel id -> the overrides that concern this member (everyone, their
        custom roles, themselves), for every channel of their communities that has any."""
        self.override_community: dict[int, int] = {}
        self.listed: set[int] = set()
        """Private channels (and threads, DMs) listing the member."""
        self.bits: dict[int, Permission] = {}
        """channel id -> resolved bits; cleared whenever anything above changes."""


class Session:
    """One member's gateway session. See the module docstring."""

    __slots__ = (
        "access",
        "awaiting_store",
        "catch_up_upto",
        "changed_cursors",
        "channels",
        "codec",
        "cursors",
        "detached_at",
        "epoch",
        "held",
        "is_superseded",
        "mirror",
        "out_seq",
        "replay",
        "replay_floor",
        "replay_size",
        "rewrite_mirror",
        "roles",
        "seq",
        "session_id",
        "sink",
        "stored_seq",
        "unmirrored",
        "user",
        "views",
    )

    def __init__(self, user: User, codec: Codec, replay_size: int,
                 session_id: str | None = None) -> None:
        self.session_id = session_id or secrets.token_urlsafe(18)
        self.user = user
        self.codec = codec
        self.roles: dict[int, Role] = {}
        self.channels: dict[int, Channel] = {}
        self.seq = 0
        # (seq, event body): the body is the one bytes object every recipient shares, so
        # a buffer costs a tuple per event, not a copy; frames are rebuilt on replay.
        # Created on the first event and dropped when acknowledgements empty it: an empty
        # deque costs 624 bytes, a few percent of an idle connection.
        self.replay: collections.deque[tuple[int, bytes]] | None = None
        self.replay_size = replay_size
        self.replay_floor = 0
        """The newest seq no longer in the buffer; resume from below it is impossible."""
        self.sink: Sink | None = None
        self.detached_at: float | None = None
        self.cursors: dict[int, int] = {}
        """Per channel, the newest message seq delivered (duplicates are dropped)."""
        self.changed_cursors: dict[int, int] = {}
        self.mirror: Mirror | None = None
        self.unmirrored: list[Entry] = []
        """Delivered, not yet written out: mirrored entries (written out once the
        mirror has them) and the message creates queued behind them (position -1: not
        stored, only written out with them so that the socket order never changes)."""
        self.awaiting_store = 0
        """Batches taken by the mirror and not yet written out (creates queue behind)."""
        self.out_seq = 0
        """The newest seq handed to the socket (or that would have been, if detached)."""
        self.stored_seq = 0
        """``seq`` as of the last write to the mirror (the sweeper writes a changed one)."""
        self.rewrite_mirror = False
        """The next mirror write replaces the session's list (set by a resume elsewhere,
        whose replay renumbers what it replays)."""
        self.held: list[tuple[bytes, int, int]] | None = None
        self.catch_up_upto: dict[int, int] | None = None
        """While held: per channel, how far this process had delivered it when the
        session was attached (the catch-up must reach at least that far)."""
        self.is_superseded = False
        self.epoch = 1
        """Which claim of the session this copy is (rooms/realtime/session_mirror.py): 1 when
        opened, the claim's epoch when resumed from the mirror."""
        self.access = AccessView()
        self.views: list[SessionView | None] | None = None
        """Each domain's own state (moderation, presence...), by key index: :meth:`view`."""

    # ----------------------------------------------------------------- view of the world

    def role_in(self, channel: Channel) -> Role | None:
        if channel.community_id is None:
            return None
        return self.roles.get(channel.community_id)

    def parent_of(self, channel: Channel) -> Channel | None:
        return self.channels.get(channel.parent_id) if channel.parent_id else None

    def view(self, key: ViewKey[V]) -> V:
        """The domain's view named ``key`` in this session, made empty on first use."""
        views = self.views
        index = key.index
        if views is None:
            views = self.views = [None] * (index + 1)
        elif len(views) <= index:
            views.extend([None] * (index + 1 - len(views)))
        found = views[index]
        if found is None:
            found = views[index] = key.factory()
        return found  # type: ignore[return-value]  # the key's factory made it

    def peek(self, key: ViewKey[V]) -> V | None:
        """The domain's view if this session has one (nothing is created)."""
        views = self.views
        if views is None or len(views) <= key.index:
            return None
        return views[key.index]  # type: ignore[return-value]

    def topics(self) -> set[str]:
        """Every bus topic this session listens to."""
        topics = {user_topic(self.user.id)}
        topics.update(community_topic(c) for c in self.roles)
        topics.update(channel_topic(c) for c in self.channels)
        for view in self.views or ():
            if view is not None:
                topics.update(view.topics(self))
        return topics

    def community_channel_ids(self, community_id: int) -> list[int]:
        return [c.id for c in self.channels.values() if c.community_id == community_id]

    def is_listed(self, channel: Channel) -> bool:
        return self.user.id in channel.member_ids or (
            channel.kind is not ChannelKind.THREAD and channel.id in self.channels
        )

    # -------------------------------------------------------------------------- delivery

    def deliver(self, event_body: bytes, channel_id: int = 0, channel_seq: int = 0) -> None:
        """Number an encoded event, keep it for resume, and write it if connected.

        ``channel_seq`` is the message's seq for ``message_create`` (0 otherwise): a
        message this session already got is dropped. ``channel_id`` is the channel an
        event belongs to (0 for user- or community-level events).

        With a mirror, a message create is *not* mirrored (PostgreSQL can replay it by
        its channel seq): it goes to the socket at once, or, while mirrored entries of
        this session wait for their write, behind them. Every other event is mirrored
        write-ahead, with its channel and that channel's position (the newest create
        delivered before it), so that a resume elsewhere interleaves the creates it
        fetches exactly where they were (rooms/realtime/session_mirror.py)."""
        if self.held is not None:
            self.held.append((event_body, channel_id, channel_seq))
            return
        cursors = self.cursors
        if channel_seq:
            if channel_seq <= cursors.get(channel_id, 0):
                return
            cursors[channel_id] = channel_seq
            self.changed_cursors[channel_id] = channel_seq
        self.seq += 1
        seq = self.seq
        replay = self.replay
        if replay is None:
            replay = self.replay = collections.deque(maxlen=self.replay_size)
        elif len(replay) == replay.maxlen:
            self.replay_floor = replay[0][0]
        replay.append((seq, event_body))
        mirror = self.mirror
        if mirror is not None:
            if not channel_seq:
                self.unmirrored.append((seq, event_body, channel_id,
                                        cursors.get(channel_id, 0) if channel_id else 0))
                mirror.mark_dirty(self)
                return
            if self.unmirrored or self.awaiting_store:
                self.unmirrored.append((seq, event_body, channel_id, NOT_STORED))
                mirror.mark_dirty(self)
                return
        self.out_seq = seq
        sink = self.sink
        if sink is not None:
            sink.write(self.codec.dispatch_frame(seq, event_body))

    def congested(self) -> bool:
        """Skip ephemeral events for a client that is behind (or detached): they would
        be stale on arrival and only push it towards the slow-consumer cut-off. They are
        skipped before numbering, so the session's sequence stays gap-free."""
        sink = self.sink
        return sink is None or sink.congested()

    def set_cursor(self, channel_id: int, seq: int) -> None:
        """Where this session starts in a channel it just gained (or loaded)."""
        self.cursors[channel_id] = seq
        self.changed_cursors[channel_id] = seq

    # -------------------------------------------------------- mirroring (write-ahead)

    def take_unmirrored(self) -> list[Entry]:
        """What the mirror writes now; written out by :meth:`write_out` afterwards."""
        entries, self.unmirrored = self.unmirrored, []
        if entries:
            self.awaiting_store += 1
        return entries

    def take_cursor_changes(self) -> dict[int, int]:
        changes, self.changed_cursors = self.changed_cursors, {}
        return changes

    def write_out(self, entries: list[Entry]) -> None:
        """Entries now safe in the mirror (and the creates queued behind them) go to
        the socket."""
        if not entries:
            return
        self.awaiting_store = max(self.awaiting_store - 1, 0)
        self.out_seq = max(self.out_seq, entries[-1][0])
        sink = self.sink
        if sink is not None:
            dispatch_frame = self.codec.dispatch_frame
            for seq, body, _, _ in entries:
                sink.write(dispatch_frame(seq, body))

    def superseded(self) -> None:
        """Another process resumed this session: this copy must stop."""
        self.is_superseded = True
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.fail(CloseCode.SESSION_INVALID, "session resumed on another connection")

    def hold(self, catch_up_upto: dict[int, int] | None = None) -> None:
        """Queue deliveries (while a resume catches up from the database)."""
        self.held = []
        self.catch_up_upto = catch_up_upto

    def release(self, first: list[tuple[bytes, int, int]]) -> None:
        """Deliver ``first`` (caught-up messages), then what was held, in order."""
        held, self.held = self.held or [], None
        self.catch_up_upto = None
        for body, channel_id, channel_seq in [*first, *held]:
            self.deliver(body, channel_id, channel_seq)

    def replay_after(self, seq: int) -> list[bytes] | None:
        """Frames after ``seq`` that were written out (or would have been, detached),
        or None when they are no longer all buffered. Frames still waiting for the
        mirror are not included: its write sends them to whichever socket is attached."""
        if seq > self.seq or seq < self.replay_floor:
            return None
        upto = self.out_seq if self.mirror is not None else self.seq
        return [self.codec.dispatch_frame(s, body) for s, body in self.replay or ()
                if seq < s <= upto]

    def load_replay(self, frames: list[tuple[int, bytes]], seq: int, floor: int) -> None:
        """A session resumed from the mirror: the frames its replay sends (numbered
        after ``floor``, the client's seq) and its newest seq."""
        self.seq = seq
        self.out_seq = seq
        self.replay = collections.deque(frames[-self.replay_size:], maxlen=self.replay_size)
        self.replay_floor = floor if len(frames) <= self.replay_size else self.replay[0][0] - 1

    def acknowledged(self, seq: int) -> None:
        """The client has everything up to ``seq``: drop it from the buffer."""
        replay = self.replay
        if replay is None:
            return
        while replay and replay[0][0] <= seq:
            self.replay_floor = replay.popleft()[0]
        if not replay:
            self.replay = None


class SessionRegistry:
    """Live and detached sessions of this process, by id."""

    def __init__(self, resume_window_ms: int) -> None:
        self._sessions: dict[str, Session] = {}
        self._resume_window_ms = resume_window_ms

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: Session) -> None:
        self._sessions[session.session_id] = session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def remove(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def detached_count(self) -> int:
        return sum(1 for s in self._sessions.values() if s.sink is None)

    def expired(self, now: float) -> list[Session]:
        """Detached sessions past the resume window, and sessions another process took
        over (the caller drops them)."""
        limit = self._resume_window_ms
        return [s for s in self._sessions.values() if s.is_superseded or (
            s.sink is None and s.detached_at is not None and now - s.detached_at > limit)]

    def all(self) -> list[Session]:
        return list(self._sessions.values())
