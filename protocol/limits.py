"""Limits of protocol v1: one typed record, sent to clients in ``hello``.

Every limit is enforced by the server; a client that knows them can stay inside them.
Defaults are chosen for a chat server of the Discord/Slack class; operators may change
them through configuration (``server/config.py``).
"""

from __future__ import annotations

import msgspec


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Numbers a client must respect. Sent in ``hello.limits``."""

    max_frame_bytes: int = 65_536
    """Largest websocket frame accepted; larger closes with 1009 before decoding."""
    max_message_chars: int = 4_000
    """Longest message content, in Unicode code points."""
    max_attachments: int = 10
    """Attachment descriptors per message."""
    max_mentions: int = 50
    """User plus role mentions per message."""
    max_emoji_chars: int = 64
    """Longest reaction emoji (a Unicode sequence or a ``:custom_name:``)."""
    max_distinct_reactions: int = 20
    """Distinct emoji on one message."""
    max_nonce_chars: int = 64
    """Longest client nonce."""
    history_page_size: int = 100
    """Most messages returned by one history request."""
    requests_per_window: int = 120
    """Requests (everything but heartbeats) a connection may send per window."""
    rate_window_ms: int = 10_000
    """Length of the rate-limit window."""
    user_messages_per_window: int = 120
    """Messages one member may post per window across all their connections and every
    node (burst, then evenly spread); beyond it ``rate_limited``."""
    identify_timeout_ms: int = 10_000
    """Time after ``hello`` within which identify or resume must arrive."""
    heartbeat_interval_ms: int = 30_000
    """How often the client must heartbeat; twice this without one closes with 4009."""
    max_invalid_frames: int = 10
    """Undecodable or out-of-state frames tolerated (each gets an error) before closing."""
    max_outbound_bytes: int = 4 * 1024 * 1024
    """Bytes queued to a client that is not reading before it is closed with 4008."""
    resume_window_ms: int = 120_000
    """How long a disconnected session stays resumable."""
    replay_buffer_events: int = 2_000
    """Events kept per session for resume; a longer gap needs a fresh identify."""
    max_resume_positions: int = 1_000
    """Most channel positions one ``resume`` may carry (more: ``invalid_frame``); send
    the channels you read most recently, the others resume from the server's record
    (possibly with duplicates to drop by channel and seq). Fixed by the wire schema."""
    typing_ttl_ms: int = 10_000
    """A typing indicator expires this long after the last ``typing`` request."""
    max_reason_chars: int = 512
    """Longest moderation reason (audit log, reports)."""
    max_purge_messages: int = 500
    """Most messages one ``purge_messages`` by ``count`` deletes."""
    max_purge_hours: int = 168
    """Furthest back (hours) a purge by user, or a ban with purge, reaches."""
    max_timeout_s: int = 2_419_200
    """Longest timeout (and longest temporary ban): 28 days."""
    max_slowmode_s: int = 21_600
    """Longest slow-mode interval: 6 hours."""
    reports_per_window: int = 10
    """Reports (of messages or users) one member may file per ``report_window_ms``."""
    report_window_ms: int = 600_000
    """Window of ``reports_per_window``: 10 minutes."""
    max_appeal_chars: int = 2_000
    """Longest appeal text."""
    moderation_page_size: int = 100
    """Most entries in one page of the audit log, review queue or appeals."""
    max_custom_roles: int = 250
    """Most custom roles one community may have (``create_role``)."""
    max_roles_per_member: int = 50
    """Most custom roles one member may hold (``set_member_roles``)."""
    max_overrides_per_channel: int = 100
    """Most permission overrides one channel may have (``set_channel_override``)."""
    presence_auto_max_members: int = 1_000
    """Communities up to this many members send ``presence_update`` to every member's
    session; larger ones only to sessions that sent ``subscribe_presence``."""
    max_presence_subscriptions: int = 10
    """Large communities one session may subscribe to the presence of at once."""
    max_question_chars: int = 500
    """Longest live-session question (``qa_ask``)."""
    questions_per_window: int = 5
    """Questions one member may ask per ``rate_window_ms`` across all live sessions
    (burst, then evenly spread); beyond it ``rate_limited``."""
    max_stage_speakers: int = 8
    """Most people on a live session's stage at once: the host, co-hosts and promoted
    speakers together (``stage_set_speaker`` beyond it: ``limit_exceeded``)."""
    max_stage_hands: int = 100
    """Most raised hands on a stage at once (``stage_raise_hand`` beyond it:
    ``limit_exceeded``); every change sends the whole list to every viewer, so the list
    is bounded."""
    voice_receive_slots: int = 9
    """Most ``recvonly`` audio m-lines a ``voice_join`` offer may carry: the speakers one
    participant hears at once (9: a 10-person room where everyone talks)."""
    max_voice_room_participants: int = 50
    """Most participants in one voice room, across every node; beyond it
    ``voice_capacity``."""
    max_voice_ice_candidates: int = 50
    """ICE candidates one session may trickle per ``voice_join``; beyond it
    ``rate_limited`` (a browser gathers a handful)."""
    max_sdp_chars: int = 32_768
    """Longest SDP offer in ``voice_join`` (larger: ``invalid_frame``). The wire schema
    holds every offer to the default; a lower configured value is enforced by the
    voice service (same error)."""
    voice_joins_per_window: int = 10
    """``voice_join`` requests one member may make per ``voice_join_window_ms`` across
    all their connections and every node (burst, then evenly spread); beyond it
    ``rate_limited`` with ``retry_after_ms``. Each join costs a media worker a DTLS
    handshake and ICE sockets and every node a drop command."""
    voice_join_window_ms: int = 60_000
    """Window of ``voice_joins_per_window``: one minute."""
