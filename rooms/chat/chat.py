"""Chat requests over the gateway: messages, reactions, typing, read state, threads.

Every handler first resolves the channel from the *session's* view (loaded from
PostgreSQL at identify, kept current by control events) and checks the member's right
with :mod:`rooms.realtime.permissions`; a channel the member cannot see is ``not_found``, never
``forbidden``, so its existence is not revealed. Only then does it touch the database.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

from persistence import channels as channels_db
from persistence import messages as messages_db
from persistence import reactions as reactions_db
from persistence import read_states as read_states_db
from persistence.database import Database
from persistence.messages import NewMessage
from protocol.base import Request
from protocol.chat import (
    AddReaction,
    ChannelCreated,
    ChannelResult,
    ChannelUpdated,
    CreateThread,
    EditMessage,
    FetchHistory,
    FetchReactions,
    HistoryResult,
    JoinThread,
    LeaveThread,
    MarkRead,
    MessageResult,
    MessageUpdated,
    ReactionAdded,
    ReactionRemoved,
    ReadStateResult,
    ReadStateUpdated,
    RemoveReaction,
    SendMessage,
    SetThreadArchived,
    StartTyping,
    TypingStarted,
    UsersResult,
)
from protocol.codes import ErrorCode
from protocol.frames import Empty, Result
from protocol.limits import Limits
from protocol.models import Channel, ChannelKind, Message, Role
from rooms.chat.group_commit import GroupCommitWriter
from rooms.errors import RequestError, forbidden, not_found
from rooms.moderation.automod import Verdict
from rooms.moderation.automod_service import AutomodService
from rooms.moderation.enforcement import PostGate, check_not_timed_out
from rooms.realtime.access import session_channel_bits
from rooms.realtime.bus import channel_topic, user_topic
from rooms.realtime.control import ViewKey
from rooms.realtime.hub import Hub
from rooms.realtime.permissions import Permission
from rooms.realtime.rate_limit import RateLimiter
from rooms.realtime.routing import Handler
from rooms.realtime.sessions import Session

_USER_MENTION = re.compile(r"<@(\d{1,16})>")
_ROLE_MENTION = re.compile(r"<@&(owner|admin|moderator|member)>")
_EVERYONE = re.compile(r"(?<![\w`])@everyone\b")

TYPING_REBROADCAST_S = 3.0
"""A member typing continuously is re-announced at most this often."""


def check_text(*texts: str) -> None:
    """PostgreSQL text cannot hold NUL; refuse it here rather than fail a commit."""
    for text in texts:
        if "\x00" in text:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "text may not contain NUL")


class CommittedPublisher:
    """The group-commit writer's callback: announce committed messages, in seq order.
    Needs only the hub, so the writer is built before the chat service that uses it."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, messages: list[Message]) -> None:
        await self.hub.publish_created(messages)


class TypingView:
    """When this session last announced typing, per channel (made on first typing)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def topics(self, session: Session) -> Iterable[str]:
        return ()


TYPING = ViewKey("typing", TypingView)


class Mentions:
    __slots__ = ("everyone", "roles", "user_ids")

    def __init__(self, user_ids: list[int], roles: list[str], everyone: bool) -> None:
        self.user_ids = user_ids
        self.roles = roles
        self.everyone = everyone


def parse_mentions(content: str, *, allow_everyone: bool, max_mentions: int) -> Mentions:
    """Mentions come from the content, never from the client's say-so. ``@everyone``
    from someone not allowed to use it stays plain text (as users expect)."""
    user_ids = list(dict.fromkeys(int(m) for m in _USER_MENTION.findall(content)))
    roles = list(dict.fromkeys(_ROLE_MENTION.findall(content)))
    if len(user_ids) + len(roles) > max_mentions:
        raise RequestError(ErrorCode.TOO_MANY_MENTIONS,
                           f"at most {max_mentions} mentions per message")
    everyone = allow_everyone and _EVERYONE.search(content) is not None
    return Mentions([u for u in user_ids if 0 < u < 2**53], roles, everyone)


class ChatService:
    """Serves the chat requests of :mod:`protocol.frames` for a session."""

    def __init__(self, db: Database, hub: Hub, writer: GroupCommitWriter, limits: Limits,
                 user_limiter: RateLimiter | None = None,
                 automod: AutomodService | None = None,
                 gate: PostGate | None = None) -> None:
        self.db = db
        self.gate = gate
        """Timeouts, locks, lockdown and slow mode (rooms/moderation/enforcement.py)."""
        self.automod = automod
        self.user_limiter = user_limiter
        self.hub = hub
        self.writer = writer
        # Edits, reactions and deletes wait for the creates they refer to (group_commit.py).
        hub.before_publish = writer.after_creates
        self.limits = limits
        self._history_in_flight: dict[tuple[int, int | None, int | None, int | None, int],
                                      asyncio.Future[tuple[list[Message], bool]]] = {}
        self.history_coalesced = 0
        hub.control.ephemeral(TypingStarted)

    def handlers(self) -> dict[type[Request], Handler]:
        """The chat requests (``delete_message`` is moderation's: it audits a
        moderator's delete in the same transaction)."""
        return {
            SendMessage: self.send_message,
            EditMessage: self.edit_message,
            AddReaction: self.add_reaction,
            RemoveReaction: self.remove_reaction,
            FetchReactions: self.fetch_reactions,
            StartTyping: self.typing,
            MarkRead: self.mark_read,
            FetchHistory: self.fetch_history,
            CreateThread: self.create_thread,
            SetThreadArchived: self.set_thread_archived,
            JoinThread: self.join_thread,
            LeaveThread: self.leave_thread,
        }

    # --------------------------------------------------------------------------- access

    def _visible(self, session: Session, channel_id: int) -> Channel:
        channel = session.channels.get(channel_id)
        if channel is None or not session_channel_bits(session, channel) \
                & Permission.VIEW_CHANNEL:
            raise not_found("unknown channel")
        return channel

    @staticmethod
    def _require(session: Session, channel: Channel, perm: Permission, why: str) -> None:
        """The session's resolved bits in ``channel`` (cached, no I/O) must hold ``perm``."""
        if session_channel_bits(session, channel) & perm != perm:
            raise forbidden(why)

    @staticmethod
    def _has(session: Session, channel: Channel, perm: Permission) -> bool:
        return session_channel_bits(session, channel) & perm == perm

    def _check_gate(self, session: Session, channel: Channel) -> None:
        """Sanctions from the session's view: timed out, locked channel (a thread
        follows its parent's lock), lockdown. No I/O."""
        if self.gate is not None:
            parent = session.parent_of(channel) if channel.kind is ChannelKind.THREAD else None
            self.gate.check(session, channel, parent)

    def _writable(self, session: Session, channel_id: int) -> Channel:
        channel = self._visible(session, channel_id)
        if channel.archived:
            raise RequestError(ErrorCode.THREAD_ARCHIVED, "the thread is archived")
        # In a thread, SEND_MESSAGES is the parent's SEND_IN_THREADS (rooms/realtime/permissions.py
        # thread_bits): members post in announcement threads, not in announcements.
        self._require(session, channel, Permission.SEND_MESSAGES,
                      "you cannot post in this channel")
        return channel

    async def _message_in(self, channel: Channel, message_id: int) -> Message:
        async with self.db.connection() as conn:
            message = await messages_db.get_message(conn, message_id)
        if message is None or message.channel_id != channel.id or message.deleted:
            raise not_found("unknown message")
        return message

    # ------------------------------------------------------------------------- messages

    def _check_content(self, content: str) -> None:
        check_text(content)
        if len(content) > self.limits.max_message_chars:
            raise RequestError(ErrorCode.CONTENT_TOO_LONG,
                               f"at most {self.limits.max_message_chars} characters")

    async def send_message(self, session: Session, req: SendMessage) -> Result:
        channel = self._writable(session, req.channel_id)
        self._check_gate(session, channel)
        self._check_content(req.content)
        if not req.content.strip() and not req.attachments:
            raise RequestError(ErrorCode.EMPTY_MESSAGE, "a message needs content or a file")
        if len(req.attachments) > self.limits.max_attachments:
            raise RequestError(ErrorCode.TOO_MANY_ATTACHMENTS,
                               f"at most {self.limits.max_attachments} attachments")
        if req.nonce is not None and len(req.nonce) > self.limits.max_nonce_chars:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"nonce longer than {self.limits.max_nonce_chars}")
        check_text(req.nonce or "", *(f for a in req.attachments
                                      for f in (a.url, a.filename, a.content_type)))
        if req.attachments:
            self._require(session, channel, Permission.ATTACH_FILES,
                          "you cannot attach files in this channel")
        mentions = parse_mentions(req.content, max_mentions=self.limits.max_mentions,
                                  allow_everyone=self._has(session, channel,
                                                           Permission.MENTION_EVERYONE))
        if req.reply_to_id is not None:
            await self._message_in(channel, req.reply_to_id)
        if self.user_limiter is not None:
            wait = await self.user_limiter.check(f"msg:{session.user.id}")
            if wait is not None:
                raise RequestError(ErrorCode.RATE_LIMITED, "you are posting too fast",
                                   retry_after_ms=wait)
        if self.gate is not None:
            await self.gate.take_slowmode(session, channel)
        verdict = await self._automod_gate(session, channel, req.content, new_message=True)
        message = await self.writer.submit(NewMessage(
            channel_id=channel.id, author=session.user, content=req.content,
            nonce=req.nonce, reply_to_id=req.reply_to_id, mention_user_ids=mentions.user_ids,
            mention_roles=mentions.roles, mention_everyone=mentions.everyone,
            attachments=list(req.attachments)))
        if verdict.hits and self.automod is not None:  # flag needs the committed id
            await self.automod.enforce(verdict, session.user, channel, req.content, message.id)
        return MessageResult(message=message)

    async def _automod_gate(self, session: Session, channel: Channel, content: str, *,
                            new_message: bool) -> Verdict:
        """Automod runs before a message is accepted; a blocking rule refuses it here
        (nothing stored), after its alert/timeout actions ran."""
        if self.automod is None:
            return Verdict()
        verdict = await self.automod.check(session, channel, content, new_message=new_message)
        blocked = self.automod.blocked_error(verdict)
        if blocked is not None:
            await self.automod.enforce(verdict, session.user, channel, content, None)
            raise blocked
        return verdict

    async def edit_message(self, session: Session, req: EditMessage) -> Result:
        channel = self._writable(session, req.channel_id)
        self._check_content(req.content)
        message = await self._message_in(channel, req.message_id)
        if message.author.id != session.user.id:
            raise forbidden("only the author can edit a message")
        if not req.content.strip() and not message.attachments:
            raise RequestError(ErrorCode.EMPTY_MESSAGE, "a message needs content or a file")
        mentions = parse_mentions(req.content, max_mentions=self.limits.max_mentions,
                                  allow_everyone=self._has(session, channel,
                                                           Permission.MENTION_EVERYONE))
        verdict = await self._automod_gate(session, channel, req.content, new_message=False)
        async with self.db.connection() as conn:
            edited = await messages_db.edit_message(
                conn, message.id, req.content, mentions.user_ids, mentions.roles,
                mentions.everyone)
        if edited is None:
            raise not_found("unknown message")
        await self.hub.publish(channel_topic(channel.id), MessageUpdated(message=edited))
        if verdict.hits and self.automod is not None:
            await self.automod.enforce(verdict, session.user, channel, req.content, edited.id)
        return MessageResult(message=edited)

    async def fetch_history(self, session: Session, req: FetchHistory) -> Result:
        channel = self._visible(session, req.channel_id)
        if req.limit > self.limits.history_page_size:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               f"limit is at most {self.limits.history_page_size}")
        if sum(x is not None for x in (req.before, req.after, req.around)) > 1:
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "use at most one of before, after, around")
        key = (channel.id, req.before, req.after, req.around, req.limit)
        shared = self._history_in_flight.get(key)
        if shared is None:
            # Single flight: after a reconnect storm many clients ask for the same page
            # at once; they share one query instead of queueing for the pool.
            shared = asyncio.ensure_future(self._read_history(*key))
            self._history_in_flight[key] = shared
            shared.add_done_callback(lambda _: self._history_in_flight.pop(key, None))
        else:
            self.history_coalesced += 1
        messages, has_more = await asyncio.shield(shared)
        return HistoryResult(channel_id=channel.id, messages=messages, has_more=has_more)

    async def _read_history(self, channel_id: int, before: int | None, after: int | None,
                            around: int | None, limit: int) -> tuple[list[Message], bool]:
        async with self.db.connection() as conn:
            return await messages_db.history(conn, channel_id, before=before, after=after,
                                             around=around, limit=limit)

    # ------------------------------------------------------------------------ reactions

    def _check_emoji(self, emoji: str) -> None:
        check_text(emoji)
        if not emoji.strip() or len(emoji) > self.limits.max_emoji_chars:
            raise RequestError(ErrorCode.INVALID_EMOJI,
                               f"an emoji is 1 to {self.limits.max_emoji_chars} characters")

    async def add_reaction(self, session: Session, req: AddReaction) -> Result:
        channel = self._writable_for_reactions(session, req.channel_id)
        if channel.community_id is not None:
            check_not_timed_out(session, channel)
        self._require(session, channel, Permission.ADD_REACTIONS,
                      "you cannot react in this channel")
        self._check_emoji(req.emoji)
        await self._message_in(channel, req.message_id)
        async with self.db.connection() as conn:
            outcome = await reactions_db.add_reaction(
                conn, req.message_id, session.user.id, req.emoji,
                max_distinct=self.limits.max_distinct_reactions)
        if outcome is None:
            raise RequestError(ErrorCode.TOO_MANY_REACTIONS,
                               f"at most {self.limits.max_distinct_reactions} distinct emoji")
        count, added = outcome
        if not added:  # reacting twice is a no-op, for the channel too
            return Empty()
        await self.hub.publish(channel_topic(channel.id), ReactionAdded(
            channel_id=channel.id, message_id=req.message_id, user_id=session.user.id,
            emoji=req.emoji, count=count))
        return Empty()

    async def remove_reaction(self, session: Session, req: RemoveReaction) -> Result:
        channel = self._writable_for_reactions(session, req.channel_id)
        self._check_emoji(req.emoji)
        await self._message_in(channel, req.message_id)
        async with self.db.connection() as conn:
            removed, count = await reactions_db.remove_reaction(
                conn, req.message_id, session.user.id, req.emoji)
        if removed:
            await self.hub.publish(channel_topic(channel.id), ReactionRemoved(
                channel_id=channel.id, message_id=req.message_id, user_id=session.user.id,
                emoji=req.emoji, count=count))
        return Empty()

    def _writable_for_reactions(self, session: Session, channel_id: int) -> Channel:
        """Reacting is allowed wherever you can read, announcements included, but not
        in archived threads."""
        channel = self._visible(session, channel_id)
        if channel.archived:
            raise RequestError(ErrorCode.THREAD_ARCHIVED, "the thread is archived")
        return channel

    async def fetch_reactions(self, session: Session, req: FetchReactions) -> Result:
        channel = self._visible(session, req.channel_id)
        self._check_emoji(req.emoji)
        await self._message_in(channel, req.message_id)
        async with self.db.connection() as conn:
            users = await reactions_db.reaction_users(conn, req.message_id, req.emoji, req.limit)
        return UsersResult(users=users)

    # ------------------------------------------------------------ typing and read state

    async def typing(self, session: Session, req: StartTyping) -> Result:
        channel = self._writable(session, req.channel_id)
        self._check_gate(session, channel)
        now = time.monotonic()
        typing_at = session.view(TYPING).at
        if now - typing_at.get(channel.id, -1e9) >= TYPING_REBROADCAST_S:
            typing_at[channel.id] = now
            await self.hub.publish(channel_topic(channel.id), TypingStarted(
                channel_id=channel.id, user=session.user,
                expires_at=int(time.time() * 1000) + self.limits.typing_ttl_ms))
        return Empty()

    async def mark_read(self, session: Session, req: MarkRead) -> Result:
        channel = self._visible(session, req.channel_id)
        role = session.role_in(channel)
        async with self.db.connection() as conn:
            await read_states_db.mark_read(conn, session.user.id, channel.id, req.seq)
            fresh = await channels_db.get_channel(conn, channel.id)
            last_seq = fresh.last_seq if fresh else channel.last_seq
            state = await read_states_db.read_state(
                conn, session.user.id, channel.id, last_seq, role.value if role else None)
        await self.hub.publish(user_topic(session.user.id), ReadStateUpdated(read_state=state))
        return ReadStateResult(read_state=state)

    # -------------------------------------------------------------------------- threads

    async def create_thread(self, session: Session, req: CreateThread) -> Result:
        parent = self._visible(session, req.channel_id)
        if parent.kind not in (ChannelKind.TEXT, ChannelKind.ANNOUNCEMENT):
            raise RequestError(ErrorCode.INVALID_ARGUMENT,
                               "threads hang off text and announcement channels")
        self._require(session, parent, Permission.CREATE_THREADS,
                      "you cannot create threads here")
        self._check_gate(session, parent)
        if req.message_id is not None:
            root = await self._message_in(parent, req.message_id)
            if root.thread_id is not None:
                raise RequestError(ErrorCode.INVALID_ARGUMENT, "that message has a thread")
        self._check_content(req.name)
        async with self.db.transaction("create_thread") as conn:
            thread = await channels_db.create_channel_txn(
                conn, kind=ChannelKind.THREAD, name=req.name, community_id=parent.community_id,
                created_by=session.user.id, parent_id=parent.id, private=parent.private,
                thread_root_message_id=req.message_id, member_ids=[session.user.id])
        # Everyone who sees the parent learns of the thread (and starts receiving it).
        await self.hub.publish(channel_topic(parent.id), ChannelCreated(channel=thread))
        return ChannelResult(channel=thread)

    def _thread(self, session: Session, thread_id: int) -> Channel:
        thread = self._visible(session, thread_id)
        if thread.kind is not ChannelKind.THREAD:
            raise RequestError(ErrorCode.INVALID_ARGUMENT, "not a thread")
        return thread

    async def set_thread_archived(self, session: Session, req: SetThreadArchived) -> Result:
        thread = self._thread(session, req.thread_id)
        async with self.db.connection() as conn:
            is_creator = await channels_db.created_by(conn, thread.id) == session.user.id
            if not is_creator and not self._has(session, thread, Permission.MANAGE_MESSAGES):
                raise forbidden("only the thread's creator or a moderator can archive it")
            updated = await channels_db.set_archived(conn, thread.id, req.archived)
        if updated is None:
            raise not_found("unknown thread")
        await self.hub.publish(channel_topic(thread.id), ChannelUpdated(channel=updated))
        return ChannelResult(channel=updated)

    async def join_thread(self, session: Session, req: JoinThread) -> Result:
        thread = self._thread(session, req.thread_id)
        async with self.db.connection() as conn:
            added = await channels_db.add_channel_member(conn, thread.id, session.user.id)
            updated = await channels_db.get_channel(conn, thread.id)
        if added and updated is not None:
            await self.hub.publish(channel_topic(thread.id), ChannelUpdated(channel=updated))
        return ChannelResult(channel=updated or thread)

    async def leave_thread(self, session: Session, req: LeaveThread) -> Result:
        thread = self._thread(session, req.thread_id)
        async with self.db.connection() as conn:
            removed = await channels_db.remove_channel_member(conn, thread.id, session.user.id)
            updated = await channels_db.get_channel(conn, thread.id)
        if removed and updated is not None:
            await self.hub.publish(channel_topic(thread.id), ChannelUpdated(channel=updated))
        return ChannelResult(channel=updated or thread)


__all__ = ["ChatService", "Mentions", "Role", "parse_mentions"]
