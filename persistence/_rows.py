"""Row-to-record conversions shared by the repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from asyncpg import Record

from protocol.models import Attachment, Channel, ChannelKind, Message, ReactionCount, Role, User

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def millis(value: datetime | None) -> int | None:
    """Integer milliseconds since the epoch; exact (no float rounding of microseconds)."""
    return None if value is None else (value - _EPOCH) // _MILLISECOND


def user_from(row: Record, prefix: str = "") -> User:
    return User(id=row[f"{prefix}id"], username=row[f"{prefix}username"],
                display_name=row[f"{prefix}display_name"], bot=row[f"{prefix}is_bot"])


def channel_from(row: Record, member_ids: list[int] | None = None) -> Channel:
    return Channel(
        id=row["id"], kind=ChannelKind(row["kind"]), name=row["name"],
        community_id=row["community_id"], parent_id=row["parent_id"], topic=row["topic"],
        private=row["private"], archived=row["archived"], position=row["position"],
        last_seq=row["last_seq"], thread_root_message_id=row["thread_root_message_id"],
        member_ids=member_ids or [], slowmode_s=row["slowmode_s"], locked=row["locked"],
        required_tier=row["required_tier"])


_attachments = msgspec.json.Decoder(list[Attachment])


def message_from(row: Record, reactions: list[ReactionCount] | None = None) -> Message:
    deleted = row["deleted_at"] is not None
    raw = row["attachments"]
    return Message(
        id=row["id"], channel_id=row["channel_id"], seq=row["seq"],
        author=User(id=row["author_id"], username=row["username"],
                    display_name=row["display_name"], bot=row["is_bot"]),
        content=row["content"], created_at=millis(row["created_at"]) or 0, nonce=row["nonce"],
        reply_to_id=row["reply_to_id"], mention_user_ids=list(row["mention_user_ids"]),
        mention_roles=[Role(r) for r in row["mention_roles"]],
        mention_everyone=row["mention_everyone"],
        attachments=_attachments.decode(raw) if raw and not deleted else [],
        reactions=reactions or [], thread_id=row["thread_id"],
        edited_at=millis(row["edited_at"]), deleted=deleted)


MESSAGE_COLUMNS = """
    m.id, m.channel_id, m.seq, m.author_id, m.content, m.nonce, m.reply_to_id,
    m.mention_user_ids, m.mention_roles, m.mention_everyone, m.attachments::text AS attachments,
    m.thread_id, m.created_at, m.edited_at, m.deleted_at,
    u.username, u.display_name, u.is_bot
"""
"""Select list for :func:`message_from`; join ``users u ON u.id = m.author_id``."""
