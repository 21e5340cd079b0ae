"""Control events registered by a domain (rooms/realtime/control.py): a domain the hub has never
heard of keeps its own per-session view current, decides who receives the event and
names the topics its view subscribes to, without a branch in the hub or a slot in the
session."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from protocol.chat import TypingStarted
from protocol.codec import JSON
from protocol.frames import Event, ServerFrame
from protocol.models import Role, User
from protocol.moderation import CommunityModerationUpdated
from rooms.realtime.bus import InProcessBus, community_topic
from rooms.realtime.control import ControlRegistry, ViewKey
from rooms.realtime.hub import Hub
from rooms.realtime.sessions import Session
from tests.test_hub import RecordingSink

COMMUNITY = 3
USER = User(id=1, username="u1", display_name="U")


class Raids:
    """A made-up domain's state in a session."""

    def __init__(self) -> None:
        self.locked: set[int] = set()

    def topics(self, session: Session) -> Iterable[str]:
        return (f"z.{c}" for c in self.locked if c in session.roles)


RAIDS = ViewKey("raids", Raids)


class RaidDomain:
    """Registers itself in its constructor, the way rooms/moderation/moderation_view.py does."""

    def __init__(self, hub: Hub, staff: set[int]) -> None:
        self.hub = hub
        self.staff = staff
        self.changed: list[tuple[int, str | None]] = []
        hub.control.on(CommunityModerationUpdated, self._updated)
        hub.control.on_view_changed(self._view_changed)

    def _updated(self, session: Session, topic: str,
                 event: CommunityModerationUpdated) -> bool:
        view = session.view(RAIDS)
        if event.lockdown:
            view.locked.add(event.community_id)
            self.hub.subscribe(session, f"z.{event.community_id}")
        return session.user.id in self.staff  # only staff see the notice itself

    def _view_changed(self, session: Session, event: Event | None) -> None:
        self.changed.append((session.user.id, None if event is None else type(event).__name__))


def _member(user_id: int) -> tuple[Session, RecordingSink]:
    session = Session(User(id=user_id, username=f"u{user_id}", display_name="U"), JSON,
                      replay_size=100)
    session.roles[COMMUNITY] = Role.MEMBER
    sink = RecordingSink()
    session.sink = sink
    return session, sink


async def test_a_new_domain_registers_its_control_event_and_view() -> None:
    hub = Hub(InProcessBus())
    domain = RaidDomain(hub, staff={1})
    (mod, mod_sink), (member, member_sink) = _member(1), _member(2)
    for session in (mod, member):
        hub.attach(session)
        assert session.peek(RAIDS) is None  # nothing until the domain needs it
    await hub.publish(community_topic(COMMUNITY),
                      CommunityModerationUpdated(community_id=COMMUNITY, lockdown=True))
    for session in (mod, member):
        assert session.view(RAIDS).locked == {COMMUNITY}
        assert f"z.{COMMUNITY}" in session.topics()
    assert hub.subscriber_count(f"z.{COMMUNITY}") == 2
    [frame] = mod_sink.frames
    decoded = msgspec.json.decode(frame, type=ServerFrame)
    assert isinstance(decoded.d, CommunityModerationUpdated)  # type: ignore[union-attr]
    assert member_sink.frames == []  # withheld by the domain's handler
    assert sorted(domain.changed) == [(1, "CommunityModerationUpdated"),
                                      (2, "CommunityModerationUpdated")]


def test_a_registered_type_is_a_control_event_and_the_first_false_stops() -> None:
    registry = ControlRegistry()
    ran: list[str] = []

    def first(session: Session, topic: str, event: CommunityModerationUpdated) -> bool:
        ran.append("first")
        return False

    def second(session: Session, topic: str, event: CommunityModerationUpdated) -> bool:
        ran.append("second")
        return True

    registry.on(CommunityModerationUpdated, first)
    registry.on(CommunityModerationUpdated, second)
    event = CommunityModerationUpdated(community_id=1, lockdown=False)
    assert registry.is_control(event)
    assert not registry.is_control(TypingStarted(channel_id=1, user=USER, expires_at=0))
    session, _ = _member(1)
    assert registry.apply(session, "c.1", event) is False
    assert ran == ["first"]
    typing = TypingStarted(channel_id=1, user=USER, expires_at=0)
    assert not registry.is_ephemeral(typing)
    registry.ephemeral(TypingStarted)
    assert registry.is_ephemeral(typing) and not registry.is_ephemeral(event)
