"""The bases every frame of protocol v1 derives from, in a leaf module.

They live apart from :mod:`protocol.frames` so that feature modules
(:mod:`protocol.voice`, ...) can define their own requests, results and events as
subclasses while :mod:`protocol.frames` still imports them into its unions: the
dependency stays one-way (``frames`` -> ``voice`` -> ``base``), with no import cycle.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Reason = Annotated[str, msgspec.Meta(max_length=512,
                                     description="Why (audit log); limits.max_reason_chars.")]
RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Client-chosen id.")]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]


class ClientFrameBase(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every client frame."""


class Request(ClientFrameBase):
    """A request: gets exactly one ``ok`` or ``error`` reply with the same ``id``."""

    id: RequestId


class ResultBase(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every ``ok.data``."""


class EventBase(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of every ``dispatch.d``."""


__all__ = [
    "ClientFrameBase",
    "EventBase",
    "Reason",
    "Request",
    "RequestId",
    "ResultBase",
    "ShortText",
]
