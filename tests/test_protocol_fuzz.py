"""Property tests: no input makes :class:`GatewayProtocol` raise or say something undocumented.

Whatever a client sends, in whatever state, ``receive`` returns normally and the
connection answers with exactly one of: a documented frame (``error`` whose code is an
:class:`ErrorCode`, or ``heartbeat_ack``), an event for the application, or nothing at
all once a :class:`CloseCode` has been decided. Examples are derandomized (fixed seed),
so a failure reproduces on every run; hypothesis prints the shrunk input.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.codec import JSON, MSGPACK, Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.frames import ClientFrame, Empty, Error, HeartbeatAck, Ready
from protocol.limits import Limits
from protocol.models import User
from protocol.session import (
    GatewayProtocol,
    IdentifyRequested,
    RequestReceived,
    ResumeRequested,
    SessionEvent,
    State,
)

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

CLIENT_TYPES: tuple[type[msgspec.Struct], ...] = typing.get_args(ClientFrame)
OPS = sorted(t.__struct_config__.tag for t in CLIENT_TYPES if isinstance(
    t.__struct_config__.tag, str))
FIELDS = sorted({f for t in CLIENT_TYPES for f in t.__struct_fields__} | {"op", "d", "s"})

READY = Ready(session_id="s1", user=User(id=1, username="u", display_name="U"),
              communities=[], private_channels=[], read_states=[])
TIGHT = Limits(max_invalid_frames=2, requests_per_window=3, rate_window_ms=1_000,
               identify_timeout_ms=50, heartbeat_interval_ms=100)
STATES = ("awaiting_identify", "authenticating", "ready", "closed")
PROTOCOL_ERRORS = {ErrorCode.INVALID_FRAME, ErrorCode.NOT_READY,
                   ErrorCode.ALREADY_IDENTIFIED, ErrorCode.RATE_LIMITED}
"""The codes ``receive`` itself may answer with (the rest come from the application)."""

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=12)
           | st.sampled_from(OPS) | st.sampled_from([0, 1, 2**53 - 1, 2**53, -1]))
keys = st.sampled_from(FIELDS) | st.text(max_size=6)
jsonish = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)
shallow = scalars | st.lists(scalars, max_size=3) | st.dictionaries(keys, scalars, max_size=3)
frameish = st.builds(
    lambda op, fields: {"op": op, **fields},
    st.sampled_from(OPS),
    st.dictionaries(st.sampled_from(FIELDS), shallow, max_size=6),
)
"""Objects with a real op and its (or other ops') field names, with values of any type."""


def _mutate(value: dict[str, Any], msgpack: bool, at: int, byte: int, cut: bool) -> bytes:
    data = bytearray(msgspec.msgpack.encode(value) if msgpack else msgspec.json.encode(value))
    at %= len(data)
    if cut:
        return bytes(data[:at])
    data[at] = byte
    return bytes(data)


mutated = st.builds(_mutate, frameish, st.booleans(), st.integers(0, 2**16),
                    st.integers(0, 255), st.booleans())
"""Encoded frames with one byte changed or the tail cut off: near misses of valid input."""


def encoded(value: Any, codec: Codec) -> bytes | str:
    if codec is MSGPACK:
        return msgspec.msgpack.encode(value)
    return msgspec.json.encode(value).decode()


def protocol_in(state: str, codec: Codec, limits: Limits = TIGHT) -> GatewayProtocol:
    proto = GatewayProtocol(codec, limits, 0.0)
    proto.data_to_send()
    if state == "awaiting_identify":
        return proto
    proto.receive(codec.encode_client(msgspec.json.decode(
        b'{"op":"identify","token":"t"}', type=ClientFrame)), 0.0)
    proto.events()
    if state == "ready":
        proto.accept_identify(READY)
    elif state == "closed":
        proto.reject_authentication()
    proto.data_to_send()
    assert proto.state.value == state
    return proto


def serve(proto: GatewayProtocol, events: list[SessionEvent], accept: bool) -> None:
    """Play the application: decide every event the protocol handed over."""
    for event in events:
        if isinstance(event, IdentifyRequested):
            if accept:
                proto.accept_identify(READY)
            else:
                proto.reject_authentication()
        elif isinstance(event, ResumeRequested):
            if accept:
                proto.accept_resume(event.session_id, [])
            else:
                proto.reject_resume("unknown session")
        else:
            proto.reply_ok(event.request.id, Empty())


def feed_one(proto: GatewayProtocol, data: bytes | str, now: float) -> list[SessionEvent]:
    """Receive one message and check the one-answer invariant; returns the events."""
    was_closed = proto.state is State.CLOSED
    proto.receive(data, now)
    frames = [proto.codec.decode_server(f) for f in proto.data_to_send()]
    events = proto.events()
    for frame in frames:
        assert isinstance(frame, Error | HeartbeatAck), frame
        if isinstance(frame, Error):
            assert frame.code in PROTOCOL_ERRORS, frame
            assert frame.id is None or 0 <= frame.id < 2**53
    for event in events:
        assert isinstance(event, IdentifyRequested | ResumeRequested | RequestReceived)
    decided = proto.close_code()
    if decided is not None:
        assert decided[0] in CloseCode.__members__.values()
        assert proto.state is State.CLOSED
    if was_closed:
        assert frames == [] and events == []
    else:
        assert len(frames) + len(events) == 1, (frames, events)
    return events


def feed_everywhere(value: Any, *, raw: bool = False) -> None:
    """Feed one input to a connection in every state, in both encodings: ``value``
    itself when ``raw`` (bytes or text as received), else ``value`` encoded."""
    for codec in (JSON, MSGPACK):
        data = value if raw else encoded(value, codec)
        for state in STATES:
            feed_one(protocol_in(state, codec), data, 1.0)


@FUZZ
@given(data=st.binary(max_size=200) | mutated)
@example(data=b"\xa1\x80")  # msgpack: a string that is not UTF-8
@example(data=b'{"op":"identify","token":"\x80"}')  # JSON bytes: the same
@example(data=b"\x82\xa2op\xa9heartbeat\xa3seq\xa1\xff")
@example(data=b"[" * 5_000)  # nesting deeper than the recursion limit
@example(data=b"\x91" * 5_000)
def test_arbitrary_bytes(data: bytes) -> None:
    feed_everywhere(data, raw=True)


@FUZZ
@given(data=st.text(max_size=200))
def test_arbitrary_text(data: str) -> None:
    feed_everywhere(data, raw=True)


@FUZZ
@given(value=jsonish)
def test_arbitrary_values(value: Any) -> None:
    feed_everywhere(value)


@FUZZ
@given(value=frameish)
def test_real_ops_with_wrong_fields(value: dict[str, Any]) -> None:
    feed_everywhere(value)


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
@settings(FUZZ, max_examples=150)  # each example is a whole conversation
@given(
    script=st.lists(
        st.tuples(
            st.one_of(frameish, shallow, st.binary(max_size=40)),
            st.integers(0, 120),  # milliseconds until the next message
            st.booleans(),  # accept (True) or reject (False) what the message asks
            st.booleans(),  # run the timers after it
        ),
        max_size=12,
    ),
    limits=st.sampled_from([Limits(), TIGHT]),
)
def test_conversations_never_break_the_protocol(
        codec: Codec, script: list[tuple[Any, int, bool, bool]], limits: Limits) -> None:
    """Sequences of messages, application decisions and timer ticks, from hello on."""
    proto = GatewayProtocol(codec, limits, 0.0)
    assert proto.data_to_send()
    now = 0.0
    for value, wait, accept, tick in script:
        now += wait
        data = value if isinstance(value, bytes) else encoded(value, codec)
        events = feed_one(proto, data, now)
        if proto.state is not State.CLOSED:
            serve(proto, events, accept)
        for frame in proto.data_to_send():  # whatever the decisions produced decodes
            codec.decode_server(frame)
        if tick:
            proto.tick(now)
            decided = proto.close_code()
            assert decided is None or decided[0] in CloseCode.__members__.values()
