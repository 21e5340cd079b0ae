"""Error codes and websocket close codes of Hearth protocol v1.

Every failure a client can see is named here, once. The gateway turns failures into
either an ``error`` reply (the request failed, the connection lives on) or a close
frame (the connection cannot continue). Both enums are rendered into
``docs/protocol.md``; their docstrings are the documentation.

Error tree (what a client sees, by where it went wrong)::

    request rejected, connection kept       -> Error(code=ErrorCode.*)
        malformed frame ........................ invalid_frame
        well-formed but not allowed ............ forbidden, not_found
        limits ................................. rate_limited, content_too_long, ...
        state .................................. thread_archived, not_ready
        a store is down (retry) ................ unavailable
        server side ............................ internal (logged, nothing lost)
    connection cannot go on                 -> close frame (CloseCode.*)
        protocol violations .................... 4001..4004
        authentication ......................... 4004
        liveness ............................... 4009 (zombie), 4003 (identify timeout)
        server ................................. 4008 (slow consumer), 4010 (restart),
                                                 1013 (a store is down: try again later)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Codes carried by an ``error`` reply. The connection stays open."""

    INVALID_FRAME = "invalid_frame"
    """The frame was not valid JSON/msgpack or did not match any op's schema."""
    NOT_READY = "not_ready"
    """A request arrived before ``ready``; identify or resume first."""
    ALREADY_IDENTIFIED = "already_identified"
    """``identify`` or ``resume`` was sent twice on one connection."""
    RATE_LIMITED = "rate_limited"
    """Too many requests in the window; retry after ``retry_after_ms``."""
    NOT_FOUND = "not_found"
    """The target (channel, message, user) does not exist or is not visible to you."""
    FORBIDDEN = "forbidden"
    """The target is visible but your role does not allow this action."""
    CONTENT_TOO_LONG = "content_too_long"
    """Message content exceeds ``limits.max_message_chars``."""
    EMPTY_MESSAGE = "empty_message"
    """A message needs content or at least one attachment."""
    TOO_MANY_ATTACHMENTS = "too_many_attachments"
    """More than ``limits.max_attachments`` attachments."""
    TOO_MANY_MENTIONS = "too_many_mentions"
    """More than ``limits.max_mentions`` mentions in one message."""
    INVALID_EMOJI = "invalid_emoji"
    """The reaction emoji is empty or longer than ``limits.max_emoji_chars``."""
    TOO_MANY_REACTIONS = "too_many_reactions"
    """The message already carries ``limits.max_distinct_reactions`` distinct emoji."""
    THREAD_ARCHIVED = "thread_archived"
    """The thread is archived; it is read-only."""
    INVALID_ARGUMENT = "invalid_argument"
    """A field is out of range (e.g. a history ``limit`` above the page size), or holds
    what no store can keep: NUL, a lone surrogate, an integer past 64 bits
    (``protocol/text.py``, the same check on the websocket and REST)."""
    TIMED_OUT = "timed_out"
    """You are timed out in this community: no sends, reactions, threads or voice until
    it ends (``retry_after_ms``)."""
    SLOWMODE = "slowmode"
    """The channel is in slow mode and you posted less than ``slowmode_s`` ago; retry
    after ``retry_after_ms``."""
    CHANNEL_LOCKED = "channel_locked"
    """The channel is locked: only moderators may post."""
    LOCKDOWN = "lockdown"
    """The community is in lockdown (raid mode): joins are paused, and new members or
    new accounts cannot post until it is lifted."""
    BANNED = "banned"
    """You are banned from this community (joining fails; ``retry_after_ms`` until a
    temporary ban ends)."""
    CONFLICT = "conflict"
    """The target changed meanwhile (a review item another moderator claimed or
    resolved first, an appeal already decided); reload it."""
    ALREADY_EXISTS = "already_exists"
    """The thing exists already (e.g. a second appeal against one action)."""
    LIMIT_EXCEEDED = "limit_exceeded"
    """A documented limit would be exceeded (e.g. ``max_custom_roles``); nothing changed."""
    AUTOMOD_BLOCKED = "automod_blocked"
    """An automod rule of the community blocks this message; the error's message names
    the rule. Nothing was stored. Sending it again unchanged fails the same way."""
    VOICE_CAPACITY = "voice_capacity"
    """The voice room is full (``limits.max_voice_room_participants``) or the media
    workers have no room for another participant; try later or another room."""
    VOICE_UNAVAILABLE = "voice_unavailable"
    """Voice is disabled on this server, or no media worker answers; nothing changed."""
    UNAVAILABLE = "unavailable"
    """PostgreSQL or Redis cannot be reached for the moment (a restart, a failover);
    nothing was applied. Retry after ``retry_after_ms`` (0.5 to 1.5 s, jittered), with
    the same nonce for a message; it succeeds once the store is back."""
    INTERNAL = "internal"
    """The server failed; nothing was applied. Safe to retry with the same nonce."""
    PREREQUISITE_NOT_MET = "prerequisite_not_met"
    """A prerequisite of the target is not met yet (e.g. a live session's
    ``prerequisite_course`` you have not completed, or a course's prerequisite
    courses); the message names it. Nothing changed; retry once it is met."""
    INVALID_REQUEST = "invalid_request"
    """REST: the body, path or query is malformed or fails the schema (the message says
    which field); the websocket equivalent is ``invalid_frame``."""
    UNAUTHORIZED = "unauthorized"
    """REST: no valid bearer token (``Authorization: Bearer <token>``)."""
    INVALID_CREDENTIALS = "invalid_credentials"
    """REST login: wrong username or password."""
    INVALID_TOKEN = "invalid_token"
    """REST refresh: the refresh token is unknown, expired or revoked (a reused one
    revokes its whole family)."""
    USERNAME_TAKEN = "username_taken"
    """REST register: the username is in use."""
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    """REST login: too many failed attempts; retry after ``Retry-After`` seconds."""
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    """A browser page from an origin that is not allowed (CORS preflight, gateway)."""
    CSRF_FAILED = "csrf_failed"
    """REST web session (``/auth/web/...``): the request lacks the CSRF proof (the
    ``X-Hearth-CSRF`` header equal to the ``hearth_csrf`` cookie) or comes from another
    site; nothing changed. Reload the page and sign in again."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """REST: the path exists but not with this HTTP method (``Allow`` lists those that do)."""
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """REST: the body is larger than the server accepts (1 MiB)."""
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """REST: a body whose ``Content-Type`` is not ``application/json``."""


class CloseCode(enum.IntEnum):
    """Websocket close codes the gateway sends.

    1000-1011 are RFC 6455 codes; 4000-4999 are Hearth's own. ``resumable`` below
    means the client may reconnect and send ``resume`` with its session id.
    """

    NORMAL = 1000
    """Orderly close requested by either side. Not resumable."""
    GOING_AWAY = 1001
    """The server is shutting down or draining for deploy. Resumable: reconnect
    (to any node) after a jittered back-off and resume."""
    MESSAGE_TOO_BIG = 1009
    """A frame exceeded ``limits.max_frame_bytes``. Resumable."""
    INTERNAL_ERROR = 1011
    """The server hit an unexpected error on this connection. Resumable."""
    TRY_AGAIN_LATER = 1013
    """``identify`` or ``resume`` needed PostgreSQL or Redis and it cannot be reached
    for the moment, or the node has too many of them queued (then ``reconnect`` came
    first: wait its ``retry_after_ms``). Resumable: reconnect after a jittered back-off
    (about 1 s) and resume."""
    UNKNOWN_ERROR = 4000
    """Unspecified; reconnect and resume."""
    DECODE_ERROR = 4001
    """Too many undecodable frames in a row (``limits.max_invalid_frames``). Resumable."""
    NOT_AUTHENTICATED = 4002
    """A request other than identify/resume/heartbeat was sent before ``ready``
    more than ``limits.max_invalid_frames`` times. Not resumable."""
    IDENTIFY_TIMEOUT = 4003
    """No identify/resume within ``limits.identify_timeout_ms`` of ``hello``."""
    AUTHENTICATION_FAILED = 4004
    """The token in identify/resume is invalid, expired or revoked. Not resumable:
    obtain a new token."""
    RATE_LIMITED = 4005
    """Requests kept coming far above the limit after ``rate_limited`` errors. Resumable
    after a back-off."""
    SESSION_INVALID = 4006
    """The session cannot be resumed (unknown, expired, or too far behind); the
    server sent ``invalid_session`` first. Reconnect and identify."""
    SLOW_CONSUMER = 4008
    """The client did not read fast enough and its outbound buffer exceeded
    ``limits.max_outbound_bytes``. Resumable."""
    ZOMBIE = 4009
    """No heartbeat for ``2 x heartbeat_interval_ms``. Resumable."""
    RESTARTING = 4010
    """The server is restarting; resume on any node."""


RESUMABLE_CLOSE_CODES: frozenset[int] = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.UNKNOWN_ERROR,
        CloseCode.DECODE_ERROR,
        CloseCode.RATE_LIMITED,
        CloseCode.SLOW_CONSUMER,
        CloseCode.ZOMBIE,
        CloseCode.RESTARTING,
    }
)
"""Close codes after which a client should reconnect and ``resume``."""
