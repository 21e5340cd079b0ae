"""The gateway's routing table (rooms/realtime/routing.py): every request type of the protocol is
served by exactly one domain, and a second claim on a type is refused at wiring time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from protocol.base import Request
from protocol.chat import StartTyping
from protocol.codes import ErrorCode
from protocol.frames import Empty, Result
from rooms.errors import RequestError
from rooms.realtime.routing import Handler, Router
from rooms.realtime.sessions import Session
from server.app import Services
from server.config import load_config
from tests.conftest import TEST_SECRET


def _concrete(cls: type[Request]) -> Iterator[type[Request]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _concrete(sub)


class Typing:
    def handlers(self) -> Mapping[type[Request], Handler]:
        async def typing(session: Session, req: StartTyping) -> Result:
            return Empty()
        return {StartTyping: typing}


async def test_every_request_type_is_routed() -> None:
    config = load_config(overrides={"database_url": "postgresql://127.0.0.1/unused",
                                    "secret": TEST_SECRET}, environ={})
    services = Services(config)
    assert set(services.router.request_types()) == set(_concrete(Request))


def test_a_request_type_served_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="StartTyping is served twice"):
        Router([Typing(), Typing()])


async def test_an_unrouted_request_is_invalid_frame() -> None:
    router = Router([])
    with pytest.raises(RequestError) as caught:
        await router.handle(None, StartTyping(id=1, channel_id=1))  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INVALID_FRAME
