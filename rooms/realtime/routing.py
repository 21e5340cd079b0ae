"""The gateway's routing table: request type -> the handler of the domain that owns it.

Every domain service (chat, moderation, review, roles, presence, live sessions, voice)
lists the requests it serves in ``handlers()``; the table is built once from all of
them, so a new domain adds its service to the list and touches no other service. Two
domains claiming the same request type is a wiring error, refused at start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from protocol.base import Request
from protocol.codes import ErrorCode
from protocol.frames import Result
from rooms.errors import RequestError
from rooms.realtime.sessions import Session

Handler = Callable[[Session, Any], Awaitable[Result]]
"""(the requesting session, the decoded request) -> the result frame; raises
:class:`rooms.errors.RequestError` for a documented error."""


class Domain(Protocol):
    """A service that serves gateway requests."""

    def handlers(self) -> Mapping[type[Request], Handler]:
        """Every request type it serves, with its handler."""
        ...


class Router:
    """Dispatches a decoded request to the one handler registered for its type."""

    def __init__(self, domains: Iterable[Domain]) -> None:
        self._handlers: dict[type[Request], Handler] = {}
        for domain in domains:
            for request_type, handler in domain.handlers().items():
                if request_type in self._handlers:
                    raise ValueError(f"{request_type.__name__} is served twice "
                                     f"(again by {type(domain).__name__})")
                self._handlers[request_type] = handler

    def request_types(self) -> list[type[Request]]:
        return list(self._handlers)

    async def handle(self, session: Session, request: Request) -> Result:
        handler = self._handlers.get(type(request))
        if handler is None:
            raise RequestError(ErrorCode.INVALID_FRAME, f"unsupported request {type(request)}")
        return await handler(session, request)
