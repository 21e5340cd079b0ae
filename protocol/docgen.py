"""Generates ``docs/protocol.md`` from the wire types and their docstrings.

:func:`render_protocol_markdown` is pure: it reads nothing but the protocol package
itself (its Structs through :mod:`msgspec.inspect`, and the source of its own modules
through :func:`inspect.getsource`, because attribute and enum member docstrings are not
kept at runtime) and returns the document as a string. Writing the file is the caller's
business (``hearth docs``)::

    .venv/bin/python -c "from protocol.docgen import render_protocol_markdown as r; \\
        open('docs/protocol.md','w').write(r())"

Every description in the document comes from a docstring or a ``msgspec.Meta``
description in ``protocol/``, except the per-field notes in :data:`FIELD_NOTES`, which
fill in fields that carry no docstring of their own.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from protocol import (
    base,
    chat,
    codes,
    communities,
    frames,
    limits,
    live,
    models,
    moderation,
    presence,
    roles,
    sidecar,
    voice,
)
from protocol.base import Request
from protocol.chat import (
    AddReaction,
    ChannelResult,
    CreateThread,
    DeleteMessage,
    EditMessage,
    FetchHistory,
    FetchReactions,
    HistoryResult,
    JoinThread,
    LeaveThread,
    MarkRead,
    MessageResult,
    ReadStateResult,
    RemoveReaction,
    SendMessage,
    SetThreadArchived,
    StartTyping,
    UsersResult,
)
from protocol.codes import RESUMABLE_CLOSE_CODES, CloseCode, ErrorCode
from protocol.docgen_examples import _json, example_of
from protocol.docgen_introspect import (
    StructT,
    _attribute_docs,
    _cell,
    _first_sentence,
    _num,
    _own_doc,
    _own_doc_module,
    _prose,
    _slug,
    _tag,
    _Types,
    _walk,
    client_frame_types,
    event_types,
    result_types,
    server_frame_types,
)
from protocol.docgen_notes import FIELD_NOTES
from protocol.frames import (
    PROTOCOL_VERSION,
    ClientFrame,
    Dispatch,
    Empty,
    Event,
    Ok,
    Result,
    ServerFrame,
)
from protocol.limits import Limits
from protocol.models import (
    Attachment,
    Channel,
    Community,
    CommunitySnapshot,
    Member,
    Message,
    Presence,
    ReactionCount,
    ReadState,
    User,
)
from protocol.presence import (
    FetchMembers,
    MembersResult,
    SetPresence,
    SubscribePresence,
)
from protocol.voice import (
    VoiceIceCandidate,
    VoiceJoin,
    VoiceJoined,
)


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.toc: list[tuple[int, str, str]] = []
        self.slugs: set[str] = set()

    def heading(self, level: int, text: str) -> str:
        slug = _slug(text)
        if slug in self.slugs:
            raise ValueError(f"duplicate heading anchor {slug!r}")
        self.slugs.add(slug)
        self.toc.append((level, text, slug))
        self.para("#" * level + " " + text)
        return slug

    def para(self, *texts: str) -> None:
        for text in texts:
            if text.strip():
                self.lines.extend([text, ""])

    def code(self, text: str, lang: str = "json") -> None:
        self.lines.extend([f"```{lang}", text.rstrip("\n"), "```", ""])

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.lines.append("| " + " | ".join(row) + " |")
        self.lines.append("")

    def text(self, head: list[str]) -> str:
        toc = ["## Contents", ""]
        for level, text, slug in self.toc:
            if level in (2, 3) and text != "Contents":
                toc.append("  " * (level - 2) + f"- [{text}](#{slug})")
        return "\n".join([*head, *toc, "", *self.lines]).rstrip("\n") + "\n"


class _Renderer:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, str]] = {}
        for module in (base, frames, models, chat, communities, presence, moderation, roles,
                       live, voice, limits, codes):
            self.docs.update(_attribute_docs(module))
        self.anchors: dict[type, str] = {}
        for cls in (*client_frame_types(), *server_frame_types()):
            self.anchors[cls] = _slug(f"`{_tag(cls)}`")
        for cls in result_types():
            self.anchors[cls] = _slug(f"Result `{_tag(cls)}`")
        for cls in event_types():
            self.anchors[cls] = _slug(f"`{_tag(cls)}`")
        for cls in self.records():
            self.anchors[cls] = _slug(f"`{cls.__name__}`")
        for enum_cls in self.enums():
            self.anchors[enum_cls] = _slug(f"`{enum_cls.__name__}`")
        self.anchors[ErrorCode] = "error-codes"
        self.anchors[Limits] = "limits"
        self.types = _Types(self.anchors)
        self.limits = Limits()
        self.doc = _Doc()

    # ------------------------------------------------------------------ what to document

    @staticmethod
    def records() -> list[StructT]:
        """Untagged Structs reachable from the frames (the domain records), by name."""
        found: dict[str, StructT] = {}

        def visit(t: mi.Type) -> None:
            if isinstance(t, mi.Metadata):
                visit(t.type)
            elif isinstance(t, mi.StructType):
                if t.tag is None and t.cls is not Limits and t.cls.__name__ not in found:
                    found[t.cls.__name__] = t.cls
                for f in t.fields:
                    visit(f.type)
            elif isinstance(t, mi.UnionType):
                for x in t.types:
                    visit(x)
            elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
                visit(t.item_type)
            elif isinstance(t, mi.DictType):
                visit(t.key_type)
                visit(t.value_type)

        for info in mi.multi_type_info([ClientFrame, ServerFrame]):
            visit(info)
        order = [User, Community, CommunitySnapshot, Member, Presence, Channel, Message,
                 Attachment, ReactionCount, ReadState]
        ranked = sorted(found.values(), key=lambda c: (order.index(c) if c in order
                                                       else len(order), c.__name__))
        return ranked

    def enums(self) -> list[type[enum.Enum]]:
        found: list[type[enum.Enum]] = []
        for cls in self.records():
            info = mi.type_info(cls)
            assert isinstance(info, mi.StructType)
            for f in info.fields:
                for t in _walk(f.type):
                    if isinstance(t, mi.EnumType) and t.cls is not ErrorCode \
                            and t.cls not in found:
                        found.append(t.cls)
        return found

    # ----------------------------------------------------------------------- fields

    def field_doc(self, cls: type, name: str, t: mi.Type) -> str:
        for klass in cls.__mro__:
            doc = self.docs.get(klass.__name__, {}).get(name)
            if doc and klass.__module__.startswith("protocol."):
                return doc
        for klass in cls.__mro__:
            note = FIELD_NOTES.get((klass.__name__, name))
            if note:
                return note
        if ("*", name) in FIELD_NOTES:
            return FIELD_NOTES[("*", name)]
        for x in _walk(t):
            if isinstance(x, mi.Metadata) and x.extra_json_schema:
                description = x.extra_json_schema.get("description")
                if isinstance(description, str):
                    return description
        return ""

    def fields_table(self, cls: StructT) -> None:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        rows: list[list[str]] = []
        if info.tag_field is not None:
            rows.append([f"`{info.tag_field}`", f'`"{info.tag}"`', "required",
                         "Says which frame this is." if info.tag_field == "op"
                         else "Says which kind this is."])
        for f in info.fields:
            if f.required:
                default = "required"
            elif f.default_factory is not msgspec.NODEFAULT:
                default = f"`{msgspec.json.encode(f.default_factory()).decode()}`"
            else:
                default = f"`{msgspec.json.encode(f.default).decode()}`"
            rows.append([f"`{f.encode_name}`", self.types.name(f.type), default,
                         _cell(self.field_doc(cls, f.name, f.type))])
        if len(rows) == 0:
            self.doc.para("No fields.")
            return
        self.doc.table(["field", "type", "default", "description"], rows)

    def frame_section(self, cls: StructT, title: str, example: Any,
                      intro: str | None = None) -> None:
        self.doc.heading(3, title)
        self.doc.para(_prose(_own_doc(cls)))
        if intro:
            self.doc.para(intro)
        self.fields_table(cls)
        self.doc.code(_json(example))

    # --------------------------------------------------------------------- sections

    def render(self) -> str:
        self.overview()
        self.lifecycle()
        self.client_frames()
        self.server_frames()
        self.results()
        self.events()
        self.records_section()
        self.error_codes()
        self.close_codes()
        self.limits_section()
        self.walkthrough()
        head = [
            f"# Hearth gateway protocol, version {PROTOCOL_VERSION}",
            "",
            "<!-- Generated by protocol/docgen.py from protocol/*.py; do not edit by hand.",
            "     Regenerate with `hearth docs` or:",
            "     .venv/bin/python -c \"from protocol.docgen import render_protocol_markdown "
            "as r; open('docs/protocol.md','w').write(r())\" -->",
            "",
            "Everything a client needs to talk to a Hearth server in real time: how to "
            "connect, every frame in both directions with its fields and an example, every "
            "error and close code, and the limits. It is generated from the wire types "
            "themselves (`protocol/frames.py`, `protocol/models.py`, `protocol/codes.py`, "
            "`protocol/limits.py`), so it cannot drift from what the server speaks.",
            "",
        ]
        return self.doc.text(head)

    def overview(self) -> None:
        d = self.doc
        d.heading(2, "Overview")
        d.para(*_prose(_own_doc_module(frames)).split("\n\n")[1:])
        d.heading(3, "Transport")
        d.para(
            "Open a websocket to `ws://HOST:PORT/gateway?encoding=json` (`wss://` behind "
            "TLS). `encoding` picks the wire format for the whole connection:",
        )
        d.table(["encoding", "frames", "notes"], [
            ["`json` (default)", "websocket **text** frames, one JSON object each",
             "UTF-8; integers are exact up to 2^53−1, so every id fits a JavaScript number"],
            ["`msgpack`", "websocket **binary** frames, one MessagePack map each",
             "the same field names and values as JSON; string keys; smaller and faster "
             "to parse"],
        ])
        d.para(
            "Any other `encoding` value is refused before the upgrade (HTTP 400 "
            "`invalid_argument`); a node that is draining, admitting too many new "
            "connections at once, or with more identifies/resumes queued than it works "
            "off in a few seconds answers HTTP 503 `unavailable` with `Retry-After` "
            "(seconds), and a page from an origin not allowed HTTP 403 "
            "`origin_not_allowed`, each in the REST error body. Every "
            "websocket message carries exactly one frame; frames are never split or "
            "batched. A frame larger than `limits.max_frame_bytes` "
            f"({_num(self.limits.max_frame_bytes)} bytes by default) closes the connection "
            "with 1009.",
            "Conventions used below:",
        )
        d.para(
            "- Ids are positive integers below 2^53. Times are integer milliseconds since "
            "the Unix epoch (UTC).\n"
            "- A field with a default may be left out; the server always sends every "
            "field.\n"
            "- Ignore fields and frames you do not know: new ones are added in place "
            "(with defaults), never renamed or retyped.\n"
            "- `limits.NAME` refers to a field of the [limits](#limits) sent in `hello`.",
        )
        d.heading(3, "Getting a token")
        d.para(
            "The gateway authenticates with a token obtained over REST (JSON, under "
            "`/api/v1`):",
        )
        d.table(["request", "body", "reply"], [
            ["`POST /api/v1/auth/register`", "`{username, password, display_name?}`",
             "201 `{user, access_token, refresh_token, expires_in}`"],
            ["`POST /api/v1/auth/login`", "`{username, password}`", "200, same as register"],
            ["`POST /api/v1/auth/refresh`", "`{refresh_token}`",
             "200, a new pair (refresh tokens rotate on each use)"],
            ["`POST /api/v1/bots` (with `Authorization: Bearer ACCESS_TOKEN`)",
             "`{username, display_name?}`", "201 `{user, token}`: a long-lived bot token"],
        ])
        d.para(
            "Access tokens are short-lived (`expires_in` seconds); `identify` and `resume` "
            "need a valid one, so refresh before reconnecting with an expired token. Bot "
            "tokens do not expire. Both kinds work in `identify` and `resume`.",
        )

    def lifecycle(self) -> None:
        d, lim = self.doc, self.limits
        d.heading(2, "Connection lifecycle")
        d.code(
            "client                                   server\n"
            "  | ---- websocket upgrade ----------------> |\n"
            "  | <--------------------------------- hello | heartbeat_interval_ms, limits\n"
            "  | identify (new session) ----------------> |\n"
            "  |   or resume (session_id, seq) ---------> |\n"
            "  | <------------------------- ready        | session_id, user, communities\n"
            "  |        or resumed + replayed dispatches  |\n"
            "  |        or invalid_session, close 4006    |\n"
            "  | heartbeat (every interval) ------------> |\n"
            "  | <------------------------ heartbeat_ack  |\n"
            "  | request {id} --------------------------> |\n"
            "  | <------------------ ok {id} | error {id} | exactly one per request\n"
            "  | <---------------------- dispatch {s, d}  | s = 1, 2, 3, ... per session\n"
            "  | <----------------------------- reconnect | server draining: close 1001\n",
            lang="text",
        )
        d.heading(3, "Hello and identify")
        d.para(
            "The server speaks first: `hello` carries `heartbeat_interval_ms` and the "
            f"[limits](#limits). Send `identify` (or `resume`) within "
            f"`limits.identify_timeout_ms` ({_num(lim.identify_timeout_ms)} ms by default) "
            "or the server closes with 4003. A bad token closes with 4004 (get a new "
            "token; do not retry with the same one). Otherwise the server answers "
            "`ready`: your user, every community you belong to with the channels you can "
            "see, your DMs and your read states. From `ready` on you may send requests "
            "and you receive dispatches: every message committed after the snapshot (after "
            "each channel's `last_seq` in `ready`) reaches you as a `message_create`, once "
            "and in order, whichever node it was sent on. Sending `identify` or `resume` "
            "again on the same "
            "connection is answered with `error` `already_identified`.",
            "Before `ready`, only `identify`, `resume` and `heartbeat` are allowed; any "
            "request is answered with `error` `not_ready`, and more than "
            f"`limits.max_invalid_frames` ({lim.max_invalid_frames}) of those in a row close "
            "the connection with 4002.",
        )
        d.heading(3, "Heartbeats")
        d.para(
            "Send `heartbeat` every `heartbeat_interval_ms` "
            f"({_num(lim.heartbeat_interval_ms)} ms by default) with `seq` set to the `s` "
            "of the last dispatch you received; the server answers `heartbeat_ack`, in "
            "any state. Any frame you send counts as a sign of life, but a connection "
            f"that sends nothing for twice the interval is closed with 4009 (resumable). "
            "If your heartbeat is not acknowledged before the next one is due, treat the "
            "connection as dead: close it and resume on a new one. Heartbeats do not count "
            "against the rate limit.",
        )
        d.heading(3, "Requests and replies")
        d.para(
            "Every frame other than `identify`, `resume` and `heartbeat` is a request. It "
            "carries an `id` you choose (0 ≤ id < 2^53) and is answered by exactly one "
            "`ok` (with a typed `data` result) or `error` (with a `code`) carrying the "
            "same `id`. Replies and dispatches interleave on the connection; match replies "
            "by `id`. The server handles one connection's requests in the order sent, so "
            "messages you post keep their order. A frame the server cannot decode at all "
            "is answered with `error` `invalid_frame` (with its `id` if one could be read, "
            "else `id: null`); more than `limits.max_invalid_frames` undecodable or "
            "out-of-place frames in a row close the connection with 4001.",
            "Requests are rate limited per connection by a token bucket holding "
            f"`limits.requests_per_window` ({lim.requests_per_window}) tokens, refilled "
            f"evenly over `limits.rate_window_ms` ({_num(lim.rate_window_ms)} ms). A "
            "request that finds the bucket empty is not performed and is answered with "
            "`error` `rate_limited` and `retry_after_ms`: wait that long, then retry. A "
            "client that keeps sending far above the limit is closed with 4005.",
            "`send_message` is idempotent when you give it a `nonce`: if the connection "
            "drops before the reply, send the same request again (same `nonce`) after "
            "reconnecting and you get the original message back instead of a duplicate. "
            "After `error` `internal` nothing was applied and the same retry is safe. "
            "`error` `unavailable` means PostgreSQL or Redis is briefly out of reach "
            "(a restart): nothing was applied; retry after `retry_after_ms`.",
        )
        d.heading(3, "Dispatches and sequence numbers")
        d.para(
            "Events reach you as `dispatch` frames: `d` is the event (tagged by `t`) and "
            "`s` is the session's sequence number, 1 for the first dispatch after `ready`, "
            "then 2, 3, ... without gaps, except that the first dispatch after a "
            "`resumed` may skip numbers (a resume on another node numbers its replay "
            "anew): `s` only grows. Remember the last `s` you processed: heartbeats "
            "report it and `resume` replays everything after it. Your own actions are "
            "dispatched to you like everyone else's (for example your `message_create`, "
            "which you can match to your request by `nonce`).",
            "Messages also carry a per-channel `seq` (1, 2, 3, ... per channel, without "
            "gaps). A jump in a channel's `seq` means you missed messages there (for "
            "example after a new `identify`); page them in with `fetch_history` `after`.",
        )
        d.heading(3, "Resuming a session")
        d.para(
            "A dropped connection does not end the session: the server keeps numbering "
            "and buffering its dispatches for `limits.resume_window_ms` "
            f"({_num(lim.resume_window_ms)} ms), up to `limits.replay_buffer_events` "
            f"({_num(lim.replay_buffer_events)}) of them. To continue, open a new "
            "connection (with the same `encoding`), wait for `hello`, and send `resume` "
            "with the `session_id` from `ready`, the last `s` you processed and "
            "`positions`: per channel id, the newest message `seq` you processed "
            "(initialise it from the `last_seq` of every channel in `ready`, set it for "
            "every channel an event brings you (`channel_create`, `channel_update`, "
            "`community_available`), advance it with every `message_create`; send at "
            f"most `limits.max_resume_positions` ({_num(lim.max_resume_positions)}), the "
            "most recently advanced). The server answers `resumed` with the number of "
            "replayed dispatches, sends those dispatches in order, then live ones. "
            "Requests that were in flight when the connection dropped get no reply; "
            "retry them (with the same `nonce` for messages). A `positions` map that is "
            "too large or malformed makes the whole `resume` an undecodable frame: "
            "`error` `invalid_frame`, nothing resumed, the connection stays open for a "
            "corrected `resume` (up to `limits.max_invalid_frames` in a row).",
            "What you may rely on after `resumed`, whichever node answered it (the one "
            "that held the session, another after that one died or drained, or one you "
            "left earlier): `s` continues after your `seq` (consecutively when the node "
            "held the session; after a jump when another node took it over: it never "
            "goes back, and heartbeats and the next `resume` use the new numbers). Every "
            "message committed in a channel whose position you sent, after that "
            "position, arrives exactly once, in the channel's `seq` order, including "
            "those committed while you were away or while no node held the session. "
            "Every other event the session had been sent and you had not processed "
            "(edits, deletes, reactions, channel, community and user events) arrives "
            "once, in its original order, after the messages of its channel that "
            "preceded it. Messages of different channels may interleave differently from "
            "the first time. For a channel you sent no position for (an older client, "
            "or beyond the limit) the server starts from its own record of what it "
            "sent, which may be behind what you processed: you may then receive a "
            "`message_create` twice; drop any whose (`channel_id`, `seq`) is not newer "
            "than your position. A channel more than 1,000 messages behind gets the "
            "first 1,000, then live ones: the `seq` jump tells you to page the rest "
            "with `fetch_history`. Other events of a time when no node held the session "
            "(after a crash: edits, reactions, new channels, typing, presence) are not "
            "replayed; `fetch_history` shows the current state. A "
            "session has one connection: the newest `resume` wins, on any node, and the "
            "connection it replaces is closed with 4006 (`session resumed on another "
            "connection`). Resuming again, on this node or another, works the "
            "same way for as long as the session lives.",
            "If the session cannot be resumed (unknown, expired, or further behind than "
            "the replay buffer) the server sends `invalid_session` and closes with 4006. "
            "Reconnect and `identify` for a new session, whose `ready` is the fresh "
            "state; fetch history for what you missed.",
            "Resume after a close with a code listed as resumable in "
            "[Close codes](#close-codes), after a connection lost without a close frame "
            "(1006), and after a `reconnect` frame. Wait a jittered back-off before "
            "reconnecting (for example a random delay up to 1 s, doubling per failed "
            "attempt up to 30 s), and honour `reconnect.retry_after_ms`. A close you "
            "initiate with 1000 or 1001 ends the session for good; close with any other "
            "code (for example 4000) if you mean to resume.",
        )
        d.heading(3, "Closing")
        d.para(
            "The server closes with one of the [close codes](#close-codes). When it "
            "drains for a deploy or shutdown it first sends `reconnect` (with a jittered "
            "`retry_after_ms`) and then closes with 1001: resume, possibly on another node.",
        )

    def client_frames(self) -> None:
        d = self.doc
        d.heading(2, "Client frames")
        d.para(
            "Frames a client sends, tagged by `op`. `identify`, `resume` and `heartbeat` "
            "are control frames; every other frame is a request with an `id`, answered "
            "by exactly one `ok` or `error`. The result type named for each request is "
            "the `data` of its `ok`.",
        )
        request_results = _request_results()
        for cls in client_frame_types():
            intro = None
            if issubclass(cls, Request):
                result = request_results.get(cls)
                if result is not None:
                    link = self.types.link(result, f"`{_tag(result)}`")
                    intro = f"Replied with `ok` carrying {link}."
            self.frame_section(cls, f"`{_tag(cls)}`", example_of(cls), intro)

    def server_frames(self) -> None:
        d = self.doc
        d.heading(2, "Server frames")
        d.para("Frames the server sends, tagged by `op`.")
        for cls in server_frame_types():
            self.frame_section(cls, f"`{_tag(cls)}`", example_of(cls))

    def results(self) -> None:
        d = self.doc
        d.heading(2, "Results")
        d.para(
            "The `data` of an `ok` reply is one of these, tagged by `type`. Which one a "
            "request gets is listed with the request. The examples show the whole `ok` "
            "frame.",
        )
        for i, cls in enumerate(result_types(), start=1):
            data = typing.cast(Result, example_of(cls))
            self.frame_section(cls, f"Result `{_tag(cls)}`", Ok(id=i, data=data))

    def events(self) -> None:
        d = self.doc
        d.heading(2, "Events")
        d.para(
            "Every event arrives as the `d` of a `dispatch` frame, tagged by `t`. You "
            "receive the events of the communities and channels you can see, and those "
            "about yourself. The examples show the whole `dispatch` frame.",
        )
        d.table(["`t`", "when"], [
            [f"[`{_tag(cls)}`](#{self.anchors[cls]})", _cell(_first_sentence(_own_doc(cls)))]
            for cls in event_types()
        ])
        for i, cls in enumerate(event_types(), start=18):
            event = typing.cast(Event, example_of(cls))
            self.frame_section(cls, f"`{_tag(cls)}`", Dispatch(s=i, d=event))

    def records_section(self) -> None:
        d = self.doc
        d.heading(2, "Records")
        d.para(_prose(_own_doc_module(models)))
        d.heading(3, "Scalar types")
        rows = []
        for alias, info, description in self.types.aliases:
            assert isinstance(info, mi.Metadata)
            rows.append([f"`{alias}`", self.types.name(info.type), _cell(description)])
        d.table(["name", "type", "meaning"], rows)
        for enum_cls in self.enums():
            d.heading(3, f"`{enum_cls.__name__}`")
            d.para(_prose(_own_doc(enum_cls)))
            d.para("One of: " + ", ".join(f'`"{m.value}"`' for m in enum_cls) + ".")
        for cls in self.records():
            d.heading(3, f"`{cls.__name__}`")
            d.para(_prose(_own_doc(cls)))
            self.fields_table(cls)
            d.code(_json(example_of(cls)))

    def error_codes(self) -> None:
        d = self.doc
        d.heading(2, "Error codes")
        d.para(_prose(_own_doc(ErrorCode)) + " An `error` frame's `code` is one of:")
        member_docs = self.docs.get("ErrorCode", {})
        d.table(["code", "meaning"], [
            [f"`{code.value}`", _cell(member_docs.get(code.name, ""))] for code in ErrorCode
        ])
        d.para(
            "Treat a code you do not know like `internal`: new codes may be added. Errors "
            "the protocol layer answers by itself (`invalid_frame`, `not_ready`, "
            "`already_identified`, `rate_limited`) also count towards the closes below; "
            "the others are decided per request and never close the connection.",
        )

    def close_codes(self) -> None:
        d = self.doc
        d.heading(2, "Close codes")
        d.para(_prose(_own_doc(CloseCode)))
        member_docs = self.docs.get("CloseCode", {})
        d.table(["code", "name", "resumable", "meaning", "what the client does"], [
            [str(int(code)), f"`{code.name}`",
             "yes" if code in RESUMABLE_CLOSE_CODES else "no",
             _cell(member_docs.get(code.name, "")), _close_action(code)]
            for code in CloseCode
        ])
        d.para(
            "A connection lost without a close frame (1006, e.g. a network failure) is "
            "resumable too. Treat any other code like 4000.",
        )

    def limits_section(self) -> None:
        d = self.doc
        d.heading(2, "Limits")
        d.para(
            _prose(_own_doc_module(limits)),
            _prose(_own_doc(Limits)) + " The defaults below are what a stock server "
            "sends; always use the values from `hello`.",
        )
        member_docs = self.docs.get("Limits", {})
        info = mi.type_info(Limits)
        assert isinstance(info, mi.StructType)
        d.table(["limit", "default", "meaning"], [
            [f"`{f.encode_name}`", f"{_num(f.default)}", _cell(member_docs.get(f.name, ""))]
            for f in info.fields
        ])

    def walkthrough(self) -> None:
        d, lim = self.doc, self.limits
        d.heading(2, "Writing a client")
        d.para(
            "The steps every client takes, in order. The Python SDK in `bots/client.py` "
            "implements all of them and is a working reference.",
        )
        d.para(
            "1. **Get a token** over REST ([Getting a token](#getting-a-token)).\n"
            "2. **Connect** to `/gateway?encoding=json` and read the first frame, "
            "`hello`. Keep `heartbeat_interval_ms` and `limits`.\n"
            "3. **Identify**: send `{\"op\": \"identify\", \"token\": TOKEN}`. Read frames "
            "until `ready` (or a close: 4004 means the token is bad). Keep "
            "`ready.session_id`; build your view of communities, channels and read states "
            "from `ready`.\n"
            "4. **Heartbeat**: start a timer that sends `{\"op\": \"heartbeat\", \"seq\": "
            "LAST_S}` every `heartbeat_interval_ms`. If the previous `heartbeat_ack` has "
            "not arrived when the next heartbeat is due, close the socket (code 4000) and "
            "resume.\n"
            "5. **Read loop**: for each frame, switch on `op`: on `dispatch`, set "
            "`LAST_S = s` and handle `d` by its `t`; on `ok`/`error`, complete the pending "
            "request with that `id`; on `heartbeat_ack`, note it; on `reconnect`, wait "
            "`retry_after_ms` and resume on a new connection. Ignore unknown ops, event "
            "types and fields.\n"
            "6. **Requests**: give each a fresh `id` from a counter, remember it until its "
            "`ok` or `error` arrives, and time out after a while. Give every "
            "`send_message` a unique `nonce` so retries are safe. On `rate_limited`, wait "
            "`retry_after_ms`; better, stay under `limits.requests_per_window` per "
            "`limits.rate_window_ms` yourself.\n"
            "7. **Reconnect**: when the connection closes with a resumable code (or drops), "
            "wait a jittered back-off, connect again, read `hello`, send `resume` with "
            "`session_id` and `LAST_S`, then expect `resumed` followed by the replayed "
            "dispatches. On `invalid_session`, or a close with 4006, `identify` again, "
            "replace your state with the new `ready` and fetch history for what you "
            "missed. Fail the requests that were in flight, or retry them (same `nonce`).\n"
            "8. **Close** with code 1000 when you are done: that ends the session.",
        )
        d.para("A minimal client in Python (`pip install websockets`), without reconnection:")
        d.code(_MINIMAL_CLIENT, lang="python")
        d.para(
            "Check the limits before sending: content up to "
            f"`limits.max_message_chars` ({_num(lim.max_message_chars)}) code points, "
            f"up to `limits.max_attachments` ({lim.max_attachments}) attachments and "
            f"`limits.max_mentions` ({lim.max_mentions}) mentions per message, emoji up to "
            f"`limits.max_emoji_chars` ({lim.max_emoji_chars}) characters, and frames up to "
            f"`limits.max_frame_bytes` ({_num(lim.max_frame_bytes)}) bytes.",
        )


_MINIMAL_CLIENT = '''\
import asyncio
import itertools
import json

import websockets


async def main(token: str) -> None:
    async with websockets.connect("ws://127.0.0.1:8080/gateway?encoding=json") as ws:
        hello = json.loads(await ws.recv())
        interval = hello["heartbeat_interval_ms"] / 1000
        await ws.send(json.dumps({"op": "identify", "token": token, "client": "demo/1"}))
        ready = json.loads(await ws.recv())
        assert ready["op"] == "ready", ready
        last_s = 0

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(interval)
                await ws.send(json.dumps({"op": "heartbeat", "seq": last_s}))

        beat = asyncio.create_task(heartbeat())
        ids = itertools.count(1)
        channel_id = ready["communities"][0]["channels"][0]["id"]
        await ws.send(json.dumps({"op": "send_message", "id": next(ids),
                                  "channel_id": channel_id, "content": "hello",
                                  "nonce": "demo-1"}))
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame["op"] == "dispatch":
                    last_s = frame["s"]
                    print("event", frame["d"]["t"], frame["d"])
                elif frame["op"] in ("ok", "error"):
                    print("reply", frame["id"], frame)
        finally:
            beat.cancel()


asyncio.run(main("YOUR_TOKEN"))
'''


_RESULT_OF: Final[dict[StructT, StructT]] = {
    SendMessage: MessageResult,
    EditMessage: MessageResult,
    DeleteMessage: Empty,
    AddReaction: Empty,
    RemoveReaction: Empty,
    FetchReactions: UsersResult,
    StartTyping: Empty,
    MarkRead: ReadStateResult,
    FetchHistory: HistoryResult,
    CreateThread: ChannelResult,
    SetThreadArchived: ChannelResult,
    JoinThread: ChannelResult,
    LeaveThread: ChannelResult,
    SetPresence: Empty,
    FetchMembers: MembersResult,
    # moderation (rooms/moderation/moderation.py)
    moderation.PurgeMessages: moderation.ModActionResult,
    moderation.WarnMember: moderation.ModActionResult,
    moderation.TimeoutMember: moderation.ModActionResult,
    moderation.RemoveTimeout: moderation.ModActionResult,
    moderation.KickMember: moderation.ModActionResult,
    moderation.BanMember: moderation.ModActionResult,
    moderation.UnbanMember: moderation.ModActionResult,
    moderation.SetSlowmode: ChannelResult,
    moderation.SetChannelLocked: ChannelResult,
    moderation.SetLockdown: moderation.ModActionResult,
    moderation.FetchAuditLog: moderation.AuditLogResult,
    moderation.ReportMessage: moderation.ReviewItemResult,
    moderation.ReportUser: moderation.ReviewItemResult,
    moderation.FetchReviewQueue: moderation.ReviewQueueResult,
    moderation.ClaimReviewItem: moderation.ReviewItemResult,
    moderation.ResolveReviewItem: moderation.ReviewItemResult,
    moderation.SubmitAppeal: moderation.AppealResult,
    moderation.FetchAppeals: moderation.AppealsResult,
    moderation.ResolveAppeal: moderation.AppealResult,
    moderation.SubscribeModFeed: Empty,
    moderation.UnsubscribeModFeed: Empty,
    # permissions (rooms/moderation/roles.py)
    roles.FetchRoles: roles.RolesResult,
    roles.CreateRole: roles.RoleResult,
    roles.UpdateRole: roles.RoleResult,
    roles.DeleteRole: Empty,
    roles.SetMemberRoles: roles.MemberResult,
    roles.FetchChannelOverrides: roles.OverridesResult,
    roles.SetChannelOverride: roles.OverrideResult,
    roles.ClearChannelOverride: Empty,
    roles.SetMemberTier: roles.MemberResult,
    roles.SetChannelTier: ChannelResult,
    SubscribePresence: Empty,
    # live sessions (rooms/voice/live.py)
    live.StageRaiseHand: live.StageResult,
    live.StageSetSpeaker: live.StageResult,
    live.StageSetCohost: live.StageResult,
    live.StageFetch: live.StageResult,
    live.QaAsk: live.QuestionResult,
    live.QaVote: live.QuestionResult,
    live.QaSetState: live.QuestionResult,
    live.QaFetch: live.QuestionsResult,
    # voice rooms (rooms/voice/voice.py)
    VoiceJoin: VoiceJoined,
    voice.VoiceLeave: Empty,
    VoiceIceCandidate: Empty,
    voice.VoiceSetState: Empty,
    voice.VoiceServerMute: moderation.ModActionResult,
    voice.VoiceDisconnect: moderation.ModActionResult,
    voice.VoiceMove: moderation.ModActionResult,
    voice.VoiceFetchStates: voice.VoiceStatesResult,
    **sidecar.SIDECAR_RESULT_OF,
}


def _request_results() -> dict[StructT, StructT]:
    """Which result each request's ``ok`` carries (as served by ``rooms/chat/chat.py``)."""
    return dict(_RESULT_OF)


_CLOSE_ACTIONS: Final[dict[int, str]] = {
    CloseCode.NORMAL: "Stop; identify on a new connection to start over.",
    CloseCode.NOT_AUTHENTICATED: "Fix the client (identify before requests); reconnect "
    "and identify.",
    CloseCode.IDENTIFY_TIMEOUT: "Reconnect and identify promptly after `hello`.",
    CloseCode.AUTHENTICATION_FAILED: "Get a new token (log in or refresh), then identify.",
    CloseCode.SESSION_INVALID: "Reconnect and identify; fetch history for what you missed.",
}


def _close_action(code: CloseCode) -> str:
    if code in _CLOSE_ACTIONS:
        return _CLOSE_ACTIONS[code]
    if code in RESUMABLE_CLOSE_CODES:
        return "Reconnect after a jittered back-off and resume."
    return "Reconnect and identify."


def undocumented_fields() -> list[str]:
    """``Class.field`` of every documented field that has no description at all."""
    renderer = _Renderer()
    missing: list[str] = []
    documented: list[StructT] = [*client_frame_types(), *server_frame_types(),
                                 *result_types(), *event_types(), *renderer.records(), Limits]
    for cls in documented:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        for f in info.fields:
            if not renderer.field_doc(cls, f.name, f.type):
                missing.append(f"{cls.__name__}.{f.name}")
    return missing


def render_protocol_markdown() -> str:
    """The whole of ``docs/protocol.md``. Pure: reads only the protocol package."""
    return _Renderer().render()


__all__ = [
    "FIELD_NOTES",
    "client_frame_types",
    "event_types",
    "example_of",
    "render_protocol_markdown",
    "result_types",
    "server_frame_types",
    "undocumented_fields",
]
