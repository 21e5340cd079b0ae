"""Part of :mod:`protocol.docgen`: descriptions of the fields that carry no docstring of
their own.

Every other description in ``docs/protocol.md`` comes from a docstring or a
``msgspec.Meta`` description in ``protocol/``."""

from __future__ import annotations

from typing import Final

from protocol.frames import (
    PROTOCOL_VERSION,
)

FIELD_NOTES: Final[dict[tuple[str, str], str]] = {
    # client frames
    ("Identify", "token"): "An access token (`access_token` from `POST /api/v1/auth/login` or "
    "`/auth/register`) or a bot token (`hb.…` from `POST /api/v1/bots`).",
    ("Resume", "token"): "A valid token of the session's user (refresh an expired access "
    "token first).",
    ("Resume", "session_id"): "`session_id` from the `ready` that opened the session.",
    ("Resume", "seq"): "The `s` of the last dispatch you processed (0 if none): every "
    "dispatch after it is replayed.",
    ("Heartbeat", "seq"): "The `s` of the last dispatch received, or null before the first.",
    ("Request", "id"): "Client-chosen request id (0 ≤ id < 2^53), echoed by the reply. Use a "
    "fresh id per request (a counter will do).",
    ("SendMessage", "channel_id"): "Where to post: a text, announcement, thread, DM or group "
    "DM channel.",
    ("SendMessage", "content"): "The text, at most `limits.max_message_chars` code points; may "
    "be empty when there are attachments.",
    ("SendMessage", "nonce"): "Idempotency key, at most `limits.max_nonce_chars`: a retry with "
    "the same nonce returns the first message instead of posting another.",
    ("SendMessage", "reply_to_id"): "The message (in the same channel) this one answers.",
    ("SendMessage", "attachments"): "Metadata of files stored elsewhere, at most "
    "`limits.max_attachments`.",
    ("EditMessage", "content"): "The new content (same rules as `send_message`).",
    ("FetchReactions", "limit"): "Most users to return (1 to 100).",
    ("MarkRead", "seq"): "Channel `seq` of the newest message read.",
    ("FetchHistory", "before"): "Page of messages with a seq below this one.",
    ("FetchHistory", "after"): "Page of messages with a seq above this one.",
    ("FetchHistory", "around"): "Page of messages surrounding this seq.",
    ("FetchHistory", "limit"): "Messages per page, at most `limits.history_page_size` "
    "(more is `invalid_argument`).",
    ("CreateThread", "channel_id"): "The text or announcement channel the thread belongs to.",
    ("CreateThread", "name"): "The thread's name (1 to 100 characters).",
    ("CreateThread", "message_id"): "Start the thread off this message of the channel.",
    ("SetThreadArchived", "archived"): "True archives (read-only), false unarchives.",
    ("SetPresence", "status"): "`online`, `idle`, `dnd`, or `invisible` (`offline` means "
    "`invisible`).",
    ("FetchMembers", "community_id"): "The community (you must be a member).",
    ("SubscribePresence", "community_id"): "The community (you must be a member).",
    ("*", "channel_id"): "The channel (threads, DMs and group DMs are channels too).",
    ("*", "message_id"): "The message.",
    ("*", "thread_id"): "The thread (a channel of kind `thread`).",
    ("*", "emoji"): "A Unicode emoji sequence or a `:custom_name:`, at most "
    "`limits.max_emoji_chars`.",
    # results
    ("MessageResult", "message"): "The stored message.",
    ("HistoryResult", "channel_id"): "The channel paged.",
    ("HistoryResult", "messages"): "The page, oldest first; deleted messages are left out.",
    ("HistoryResult", "has_more"): "More messages exist beyond this page in the direction "
    "paged.",
    ("ChannelResult", "channel"): "The channel or thread as it now is.",
    ("UsersResult", "users"): "The users, in no particular order.",
    ("ReadStateResult", "read_state"): "Your read state in the channel.",
    ("MembersResult", "community_id"): "The community paged.",
    ("MembersResult", "members"): "The page, by ascending user id (at most `limit`).",
    # events
    ("MessageCreated", "message"): "The new message (yours too: match it by `nonce`).",
    ("MessageUpdated", "message"): "The message after the edit.",
    ("MessageDeleted", "seq"): "The deleted message's seq in its channel.",
    ("ReactionAdded", "user_id"): "Who reacted.",
    ("ReactionAdded", "count"): "How many members now use this emoji on the message.",
    ("ReactionRemoved", "user_id"): "Whose reaction went.",
    ("ReactionRemoved", "count"): "How many members still use this emoji on the message.",
    ("TypingStarted", "user"): "Who is typing.",
    ("TypingStarted", "expires_at"): "When the indicator lapses unless renewed (milliseconds "
    "since the Unix epoch).",
    ("ReadStateUpdated", "read_state"): "Your new read state in the channel.",
    ("ChannelCreated", "channel"): "The channel.",
    ("ChannelUpdated", "channel"): "The channel as it now is.",
    ("ChannelDeleted", "channel_id"): "The channel gone (or no longer visible).",
    ("ChannelDeleted", "community_id"): "Its community; null for DMs and group DMs.",
    ("CommunityAvailable", "snapshot"): "The community, your role and the channels you see.",
    ("CommunityUnavailable", "community_id"): "The community you no longer belong to.",
    ("MemberJoined", "member"): "The new member.",
    ("MemberUpdated", "member"): "The member with their new role.",
    ("MemberLeft", "community_id"): "The community.",
    ("MemberLeft", "user_id"): "Who left or was removed.",
    ("PresenceUpdated", "community_id"): "The community whose members changed presence.",
    ("PresenceUpdated", "presences"): "The latest presence of each member who changed, "
    "once each.",
    # server frames
    ("Hello", "heartbeat_interval_ms"): "Send a `heartbeat` this often (milliseconds).",
    ("Hello", "limits"): "The limits this server enforces.",
    ("Hello", "protocol_version"): f"The protocol version; {PROTOCOL_VERSION} for this "
    "document.",
    ("Ready", "session_id"): "Keep it: `resume` needs it after a dropped connection.",
    ("Ready", "user"): "Who you are.",
    ("Ready", "communities"): "Every community you belong to, with the channels you can see.",
    ("Ready", "private_channels"): "Your DMs and group DMs.",
    ("Ready", "read_states"): "Your read state in channels where you have one.",
    ("Resumed", "session_id"): "The session resumed.",
    ("Resumed", "replayed"): "How many replayed dispatches follow this frame.",
    ("InvalidSession", "reason"): "Why the session cannot be resumed (for logs).",
    ("Ok", "id"): "The `id` of the request answered.",
    ("Ok", "data"): "The result; its `type` says which.",
    ("Error", "id"): "The `id` of the request answered, or null when it could not be read.",
    ("Error", "code"): "What went wrong (see [Error codes](#error-codes)).",
    ("Error", "message"): "Human-readable detail, for logs; do not parse it.",
    ("Error", "retry_after_ms"): "With `rate_limited`, `unavailable`, `slowmode`, "
    "`timed_out` and `banned`: wait this long (milliseconds) before retrying.",
    ("Dispatch", "s"): "The session sequence number: 1, 2, 3, ... without gaps, per session.",
    ("Dispatch", "d"): "The event; its `t` says which.",
    ("Reconnect", "retry_after_ms"): "Wait this long (milliseconds) before reconnecting. "
    "A draining node spreads its clients uniformly over 0 to 1,000 ms (over more only when "
    "it holds more connections than the others admit in a second, 2,000 per process). A "
    "node with too many identifies/resumes queued (a reconnect storm) sends it before "
    "closing 1013, with a jittered delay (1 to 30 s) after which its queue has room.",
    # records
    ("User", "username"): "Unique account name.",
    ("User", "display_name"): "The name to show.",
    ("User", "bot"): "True for bot accounts.",
    ("Attachment", "url"): "Where the file can be fetched.",
    ("Attachment", "filename"): "The file's name.",
    ("Attachment", "content_type"): "Its MIME type.",
    ("Attachment", "size"): "Its size in bytes.",
    ("Attachment", "width"): "Pixels, for images and video.",
    ("Attachment", "height"): "Pixels, for images and video.",
    ("ReactionCount", "emoji"): "The emoji.",
    ("ReactionCount", "count"): "How many members used it.",
    ("Message", "channel_id"): "The channel it was posted in.",
    ("Message", "seq"): "Its position in the channel: 1, 2, 3, ... without gaps.",
    ("Message", "author"): "Who posted it.",
    ("Message", "content"): "Its text (empty once deleted).",
    ("Message", "created_at"): "When it was posted.",
    ("Message", "nonce"): "The nonce it was sent with.",
    ("Message", "reply_to_id"): "The message it answers.",
    ("Message", "mention_user_ids"): "Users mentioned with `<@USER_ID>`.",
    ("Message", "mention_roles"): "Roles mentioned with `<@&ROLE>`.",
    ("Message", "mention_everyone"): "Whether `@everyone` was used by someone allowed to.",
    ("Message", "attachments"): "Attachment metadata.",
    ("Message", "reactions"): "Each emoji on it and how many members used it.",
    ("Message", "thread_id"): "The thread started off this message, if any.",
    ("Message", "edited_at"): "When it was last edited.",
    ("Message", "deleted"): "True once deleted.",
    ("Channel", "kind"): "What the channel is.",
    ("Channel", "name"): "Its name (for DMs, may be empty).",
    ("Channel", "community_id"): "Its community; null for DMs and group DMs.",
    ("Channel", "parent_id"): "The category of a channel, or the channel of a thread.",
    ("Channel", "topic"): "Its topic.",
    ("Channel", "private"): "Visible only to the members added to it.",
    ("Channel", "archived"): "Threads: archived threads are read-only.",
    ("Channel", "position"): "Sort order among its siblings.",
    ("Channel", "last_seq"): "The `seq` of its newest message (0 when empty).",
    ("Channel", "thread_root_message_id"): "Threads: the message it was started off.",
    ("Community", "name"): "Its name.",
    ("Community", "owner_id"): "The owner's user id.",
    ("Community", "created_at"): "When it was created.",
    ("Member", "community_id"): "The community.",
    ("Member", "user"): "The member.",
    ("Member", "role"): "Their role.",
    ("Member", "joined_at"): "When they joined.",
    ("CommunitySnapshot", "community"): "The community.",
    ("CommunitySnapshot", "role"): "Your role in it.",
    ("CommunitySnapshot", "channels"): "The channels you can see.",
    ("CommunitySnapshot", "member_count"): "How many members it has.",
    ("Presence", "user_id"): "The user.",
    ("Presence", "status"): "`online`, `idle`, `dnd` or `offline` (invisible users are "
    "`offline`).",
    ("ReadState", "channel_id"): "The channel.",
    ("ReadState", "last_read_seq"): "The newest `seq` you have read.",
    ("ReadState", "unread_count"): "Messages after it.",
    ("ReadState", "mention_count"): "Messages after it that mention you.",
}
"""Descriptions of fields that carry no docstring: ``(class name or "*", field)``."""
