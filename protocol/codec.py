"""Wire encodings of protocol v1: JSON text frames (default) and msgpack binary frames.

One decoder per direction is built once at import. Fan-out is encode-once: an event is
serialized a single time per encoding (:meth:`Codec.encode_event`) and every
recipient's ``dispatch`` frame is that body spliced behind a tiny per-session prefix
(:meth:`Codec.dispatch_frame`), byte-for-byte what encoding ``Dispatch(s, d)`` whole
would produce. The splice costs a few hundred nanoseconds; re-encoding the event per
recipient would cost microseconds and scale with the message size.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from protocol.frames import ClientFrame, Dispatch, Event, ServerFrame


class Encoding(enum.StrEnum):
    """Chosen by the client with ``/gateway?encoding=json|msgpack``."""

    JSON = "json"
    MSGPACK = "msgpack"


class Codec:
    """Encodes server frames and decodes client frames for one encoding."""

    encoding: Encoding
    binary: bool
    """True when frames travel as websocket binary frames (msgpack)."""

    def encode(self, frame: ServerFrame) -> bytes:
        raise NotImplementedError

    def encode_event(self, event: Event) -> bytes:
        """Serialize an event once; pass the result to :meth:`dispatch_frame`."""
        raise NotImplementedError

    def dispatch_frame(self, seq: int, event_body: bytes) -> bytes:
        """The ``dispatch`` frame for session sequence ``seq`` around an encoded event."""
        raise NotImplementedError

    def decode_client(self, data: bytes | str) -> ClientFrame:
        """Decode one client frame; raises ``msgspec.DecodeError`` or ``ValidationError``."""
        raise NotImplementedError

    def decode_server(self, data: bytes | str) -> ServerFrame:
        """Decode one server frame (used by clients, bots and the load-test harness)."""
        raise NotImplementedError

    def encode_client(self, frame: ClientFrame) -> bytes:
        """Encode a client frame (used by clients)."""
        raise NotImplementedError


class JsonCodec(Codec):
    encoding = Encoding.JSON
    binary = False

    _DISPATCH_PREFIX: Final = b'{"op":"dispatch","s":'
    _DISPATCH_MIDDLE: Final = b',"d":'

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._client_decoder = msgspec.json.Decoder(ClientFrame)
        self._server_decoder = msgspec.json.Decoder(ServerFrame)

    def encode(self, frame: ServerFrame) -> bytes:
        return self._encoder.encode(frame)

    def encode_event(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def dispatch_frame(self, seq: int, event_body: bytes) -> bytes:
        return b"".join(
            (self._DISPATCH_PREFIX, b"%d" % seq, self._DISPATCH_MIDDLE, event_body, b"}")
        )

    def decode_client(self, data: bytes | str) -> ClientFrame:
        frame: ClientFrame = self._client_decoder.decode(data)
        return frame

    def decode_server(self, data: bytes | str) -> ServerFrame:
        sframe: ServerFrame = self._server_decoder.decode(data)
        return sframe

    def encode_client(self, frame: ClientFrame) -> bytes:
        return self._encoder.encode(frame)


class MsgpackCodec(Codec):
    encoding = Encoding.MSGPACK
    binary = True

    # A msgpack fixmap of 3 entries: "op": "dispatch", "s": <int>, "d": <event map>.
    _DISPATCH_PREFIX: Final = b"\x83" + msgspec.msgpack.encode("op") + msgspec.msgpack.encode(
        "dispatch"
    ) + msgspec.msgpack.encode("s")
    _DISPATCH_MIDDLE: Final = msgspec.msgpack.encode("d")

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._client_decoder = msgspec.msgpack.Decoder(ClientFrame)
        self._server_decoder = msgspec.msgpack.Decoder(ServerFrame)

    def encode(self, frame: ServerFrame) -> bytes:
        return self._encoder.encode(frame)

    def encode_event(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def dispatch_frame(self, seq: int, event_body: bytes) -> bytes:
        return b"".join(
            (self._DISPATCH_PREFIX, self._encoder.encode(seq), self._DISPATCH_MIDDLE, event_body)
        )

    def decode_client(self, data: bytes | str) -> ClientFrame:
        if isinstance(data, str):
            data = data.encode()
        frame: ClientFrame = self._client_decoder.decode(data)
        return frame

    def decode_server(self, data: bytes | str) -> ServerFrame:
        if isinstance(data, str):
            data = data.encode()
        sframe: ServerFrame = self._server_decoder.decode(data)
        return sframe

    def encode_client(self, frame: ClientFrame) -> bytes:
        return self._encoder.encode(frame)


JSON: Final[Codec] = JsonCodec()
MSGPACK: Final[Codec] = MsgpackCodec()
CODECS: Final[dict[Encoding, Codec]] = {Encoding.JSON: JSON, Encoding.MSGPACK: MSGPACK}


def codec_for(name: str | None) -> Codec | None:
    """The codec for a ``?encoding=`` value (default JSON), or None if unknown."""
    if not name:
        return JSON
    try:
        return CODECS[Encoding(name)]
    except ValueError:
        return None


def dispatch_of(seq: int, event: Event) -> Dispatch:
    """The typed frame that :meth:`Codec.dispatch_frame` produces bytes for."""
    return Dispatch(s=seq, d=event)
