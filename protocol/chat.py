"""Chat on the gateway: messages, reactions, typing, read states, history, threads and
the channel events.

Served by ``rooms/chat/chat.py``; the records inside (``Message``, ``Channel``, ...) are in
:mod:`protocol.models`. A message is sent once per nonce: a retry with the same nonce
returns the stored message.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.base import EventBase, Reason, Request, ResultBase
from protocol.models import Attachment, Channel, Id, Message, ReadState, Seq, User


class SendMessage(Request, tag="send_message"):
    """Post a message. Mentions are parsed from ``content`` on the server:
    ``<@USER_ID>``, ``<@&ROLE>`` and ``@everyone``. Retrying with the same ``nonce``
    never creates a second message: the reply carries the first one."""

    channel_id: Id
    content: str = ""
    nonce: str | None = None
    reply_to_id: Id | None = None
    attachments: list[Attachment] = []


class EditMessage(Request, tag="edit_message"):
    """Replace the content of your own message."""

    channel_id: Id
    message_id: Id
    content: str


class DeleteMessage(Request, tag="delete_message"):
    """Delete your message, or any message with ``MANAGE_MESSAGES``. A moderator's
    delete of someone else's message lands in the audit log with ``reason``; with
    ``item_id`` it also resolves that review item."""

    channel_id: Id
    message_id: Id
    reason: Reason | None = None
    item_id: Id | None = None


class AddReaction(Request, tag="add_reaction"):
    """React to a message with an emoji. Adding twice is a no-op."""

    channel_id: Id
    message_id: Id
    emoji: str


class RemoveReaction(Request, tag="remove_reaction"):
    """Remove your reaction. Removing an absent one is a no-op."""

    channel_id: Id
    message_id: Id
    emoji: str


class FetchReactions(Request, tag="fetch_reactions"):
    """Who reacted to a message with ``emoji`` (replied with ``users``)."""

    channel_id: Id
    message_id: Id
    emoji: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100


class StartTyping(Request, tag="typing"):
    """Tell the channel you are typing; expires after ``limits.typing_ttl_ms`` (10 s
    by default). Send it again every few seconds while typing goes on: the server
    re-announces you at most every 3 s. Typing is never stored."""

    channel_id: Id


class MarkRead(Request, tag="mark_read"):
    """Mark the channel read up to and including ``seq``. Never moves backwards."""

    channel_id: Id
    seq: Seq


class FetchHistory(Request, tag="fetch_history"):
    """A page of messages, newest last. At most one of ``before``/``after``/``around``
    (channel seqs); none means the newest page."""

    channel_id: Id
    before: Seq | None = None
    after: Seq | None = None
    around: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1)] = 50


class CreateThread(Request, tag="create_thread"):
    """Start a thread in a text/announcement channel, optionally off a message."""

    channel_id: Id
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    message_id: Id | None = None


class SetThreadArchived(Request, tag="set_thread_archived"):
    """Archive (read-only) or unarchive a thread. Its creator or a moderator."""

    thread_id: Id
    archived: bool


class JoinThread(Request, tag="join_thread"):
    """Become a member of a thread (you are notified of its messages)."""

    thread_id: Id


class LeaveThread(Request, tag="leave_thread"):
    """Stop being a member of a thread."""

    thread_id: Id


class MessageResult(ResultBase, tag="message"):
    """The message created, edited or deduplicated by nonce."""

    message: Message


class HistoryResult(ResultBase, tag="history"):
    """A page of history, oldest first. ``has_more`` is true when older (for
    ``before``/default) or newer (for ``after``) messages exist beyond this page."""

    channel_id: Id
    messages: list[Message]
    has_more: bool


class ChannelResult(ResultBase, tag="channel"):
    """A channel or thread created or changed."""

    channel: Channel


class UsersResult(ResultBase, tag="users"):
    """A list of users (e.g. who reacted)."""

    users: list[User]


class ReadStateResult(ResultBase, tag="read_state"):
    """The read state after ``mark_read``."""

    read_state: ReadState


class MessageCreated(EventBase, tag="message_create"):
    """A message was posted in a channel you can see."""

    message: Message


class MessageUpdated(EventBase, tag="message_update"):
    """A message was edited; ``message`` is its new state."""

    message: Message


class MessageDeleted(EventBase, tag="message_delete"):
    """A message was deleted."""

    channel_id: Id
    message_id: Id
    seq: Seq


class MessagesDeleted(EventBase, tag="message_delete_bulk"):
    """Several messages of one channel were deleted at once (purge, ban with purge).
    At most 100 ids per event; a large purge sends several."""

    channel_id: Id
    message_ids: list[Id]


class ReactionAdded(EventBase, tag="reaction_add"):
    """``user_id`` reacted; ``count`` is the emoji's new total on the message."""

    channel_id: Id
    message_id: Id
    user_id: Id
    emoji: str
    count: int


class ReactionRemoved(EventBase, tag="reaction_remove"):
    """``user_id`` removed a reaction; ``count`` is the emoji's new total."""

    channel_id: Id
    message_id: Id
    user_id: Id
    emoji: str
    count: int


class TypingStarted(EventBase, tag="typing_start"):
    """``user`` is typing in ``channel_id`` until ``expires_at`` unless renewed.
    Ephemeral and never stored (not in history): drop the indicator at ``expires_at``,
    at the latest ``limits.typing_ttl_ms`` (10 s by default) after you received it
    (your clock may differ from the server's), or when that user's message arrives."""

    channel_id: Id
    user: User
    expires_at: int


class ReadStateUpdated(EventBase, tag="read_state_update"):
    """Your read state changed (from another of your sessions)."""

    read_state: ReadState


class ChannelCreated(EventBase, tag="channel_create"):
    """A channel, thread or DM you can see was created (or you gained access)."""

    channel: Channel


class ChannelUpdated(EventBase, tag="channel_update"):
    """A channel you can see changed (renamed, archived, members changed)."""

    channel: Channel


class ChannelDeleted(EventBase, tag="channel_delete"):
    """A channel was deleted or you lost access to it."""

    channel_id: Id
    community_id: Id | None = None


__all__ = [
    "AddReaction",
    "ChannelCreated",
    "ChannelDeleted",
    "ChannelResult",
    "ChannelUpdated",
    "CreateThread",
    "DeleteMessage",
    "EditMessage",
    "FetchHistory",
    "FetchReactions",
    "HistoryResult",
    "JoinThread",
    "LeaveThread",
    "MarkRead",
    "MessageCreated",
    "MessageDeleted",
    "MessageResult",
    "MessageUpdated",
    "MessagesDeleted",
    "ReactionAdded",
    "ReactionRemoved",
    "ReadStateResult",
    "ReadStateUpdated",
    "RemoveReaction",
    "SendMessage",
    "SetThreadArchived",
    "StartTyping",
    "TypingStarted",
    "UsersResult",
]
