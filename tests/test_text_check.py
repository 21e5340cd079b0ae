"""The text check of ``protocol/text.py`` on the gateway's side: every request type, with
NUL, a lone surrogate or an integer past bigint in any of its fields (any depth), is
answered ``invalid_argument`` (or ``invalid_frame`` where the schema refuses first) and
never reaches the domain, where PostgreSQL would fail on it. Socket-free."""

from __future__ import annotations

import json
import typing

import msgspec
import pytest

from protocol.base import Request
from protocol.codec import JSON
from protocol.frames import ClientFrame, Error, Identify, Ready, Resume
from protocol.limits import Limits
from protocol.models import User
from protocol.session import GatewayProtocol, IdentifyRequested, RequestReceived
from protocol.text import MAX_TEXT_CHARS, text_problem, value_problem
from tests.schema_samples import Samples

T0 = 1_000_000.0
REQUESTS = [cls for cls in typing.get_args(ClientFrame)
            if issubclass(cls, Request) and cls not in (Identify, Resume)]
_SCHEMAS, _COMPONENTS = msgspec.json.schema_components(REQUESTS)
SAMPLES = Samples(_COMPONENTS)


def test_text_problems() -> None:
    assert text_problem("plain") is None
    assert text_problem("héllo 👍") is None
    assert text_problem("a\x00") == "must not contain NUL"
    assert text_problem("\ud800") == "must not contain a lone surrogate"
    assert text_problem("x" * MAX_TEXT_CHARS) is None
    assert text_problem("x" * (MAX_TEXT_CHARS + 1)) is not None
    assert value_problem([1, {"k": [2**63]}]) == "[1].k[0] is out of range"
    assert value_problem(User(id=1, username="a\x00", display_name="A")) == (
        "username must not contain NUL")
    assert value_problem({"a\x00": 1}) == " key must not contain NUL"


def ready() -> GatewayProtocol:
    """A connection past identify, with a rate limit no test reaches."""
    proto = GatewayProtocol(JSON, Limits(requests_per_window=100_000), T0)
    proto.data_to_send()
    proto.receive(json.dumps({"op": "identify", "token": "tok"}), T0)
    assert proto.events() == [IdentifyRequested("tok", "")]
    proto.accept_identify(Ready(session_id="s",
                                user=User(id=7, username="ada", display_name="Ada"),
                                communities=[], private_channels=[], read_states=[]))
    proto.data_to_send()
    return proto


@pytest.mark.parametrize("index", range(len(REQUESTS)),
                         ids=[str(cls.__struct_config__.tag) for cls in REQUESTS])
def test_hostile_values_never_reach_the_domain(index: int) -> None:
    schema = _SCHEMAS[index]
    proto = ready()
    sample = SAMPLES.sample(schema)
    proto.receive(json.dumps({**sample, "id": 1}), T0)  # the valid sample is a request
    assert [type(e) for e in proto.events()] == [RequestReceived]
    proto.data_to_send()
    tried = 0
    for where, frame in SAMPLES.mutations(schema, sample):
        if where in (".op", ".id"):
            continue
        proto.receive(json.dumps({**frame, "id": 2}), T0)
        assert proto.events() == [], (where, frame)
        [reply] = [JSON.decode_server(data) for data in proto.data_to_send()]
        assert isinstance(reply, Error), (where, reply)
        assert reply.code.value in ("invalid_argument", "invalid_frame"), (where, reply)
        tried += 1
        # A valid request between two refusals: the connection's count of invalid
        # frames in a row (which closes it at limits.max_invalid_frames) starts over.
        proto.receive(json.dumps({**sample, "id": 3}), T0)
        assert [type(e) for e in proto.events()] == [RequestReceived]
    assert tried or tag_only(schema), "no field to make hostile"


def tag_only(schema: dict[str, typing.Any]) -> bool:
    """Whether every field but ``op`` and ``id`` is an enum (nothing to make hostile)."""
    props = SAMPLES.resolve(schema).get("properties", {})
    return all("enum" in SAMPLES.resolve(p) for name, p in props.items()
               if name not in ("op", "id"))
