"""The base classes of the tagged unions in :mod:`protocol.frames`.

They live apart from the unions so that feature modules (``protocol/live.py``,
``protocol/voice.py``...) can define their requests, results and events as subclasses
and :mod:`protocol.frames` can import those subclasses into its unions without an
import cycle. :mod:`protocol.frames` re-exports every name here.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1, description="Client-chosen id.")]


class ClientFrameBase(msgspec.Struct, tag_field="op", kw_only=True):
    """Base of every client frame."""


class Request(ClientFrameBase):
    """A request: gets exactly one ``ok`` or ``error`` reply with the same ``id``."""

    id: RequestId


class ResultBase(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every ``ok.data``."""


class EventBase(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of every ``dispatch.d``."""


__all__ = ["ClientFrameBase", "EventBase", "Request", "RequestId", "ResultBase"]
