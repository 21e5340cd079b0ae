"""Control events and per-session views, registered by the domains that own them.

(The same registry also holds which event types are *ephemeral*: skipped for a
congested client; each domain marks its own, e.g. typing, presence, speaking.)

A *control* event changes what a session may see (a channel created, a community
joined, a sanction, a lockdown). The hub decodes one once per process and, for every
local recipient, runs the handlers the domains registered for its type, in registration
order (the hub's own view of channels, communities and access first): each updates the
session's view and answers whether the session may receive the event; the first False
stops the rest and withholds it. Then every view listener (e.g. voice rooms, which drop
a participant who lost the channel) is told the view changed.

A domain keeps its per-session state in a view of its own (:class:`ViewKey`:
``session.view(KEY)``), which also names the bus topics the state subscribes the
session to, so adding a domain adds neither a branch to the hub nor a slot to the
session.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from protocol.frames import Event
    from rooms.realtime.sessions import Session

E = TypeVar("E")
V = TypeVar("V", bound="SessionView")

ControlHandler = Callable[["Session", str, Any], bool]
"""(recipient session, the topic, the event) -> may the session receive it. Runs on
the event loop for every local recipient: no I/O, no blocking."""
ViewListener = Callable[["Session", "Event | None"], None]
"""(session, the control event, or None after an access refresh) -> nothing; must not
block. Lets state held outside the session (voice rooms) follow a changed view."""


class Topics(Protocol):
    """The hub's subscription calls (``rooms.realtime.hub.Hub``), which control handlers use."""

    def subscribe(self, session: Session, topic: str) -> None: ...

    def unsubscribe(self, session: Session, topic: str) -> None: ...


class SessionView(Protocol):
    """A domain's state in one session."""

    def topics(self, session: Session) -> Iterable[str]:
        """The bus topics this state subscribes the session to (resubscribed on
        attach; only communities still in ``session.roles`` count)."""
        ...


class ViewKey(Generic[V]):
    """Names one domain's view in a session, with how to make an empty one (like
    ``aiohttp.web.AppKey``: typed, no string keys). Each key gets a small index, its
    place in the session's list of views: a list of a few entries costs a third of a
    dict, per session."""

    __slots__ = ("factory", "index", "name")
    _next_index = itertools.count()

    def __init__(self, name: str, factory: Callable[[], V]) -> None:
        self.name = name
        self.factory = factory
        self.index = next(ViewKey._next_index)

    def __repr__(self) -> str:
        return f"<ViewKey {self.name}>"


class ControlRegistry:
    """Event type -> the handlers that apply it to a session's view; view listeners."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[ControlHandler]] = {}
        self._listeners: list[ViewListener] = []
        self._types: tuple[type, ...] = ()
        self._ephemeral: tuple[type, ...] = ()

    def on(self, event_type: type[E], handler: Callable[[Session, str, E], bool]) -> None:
        """Run ``handler`` for every local recipient of an ``event_type`` event (which
        makes that type a control event on the bus)."""
        self._handlers.setdefault(event_type, []).append(handler)
        self._types = tuple(self._handlers)

    def on_view_changed(self, listener: ViewListener) -> None:
        """Call ``listener`` after a control event or an access refresh changed a
        session's view."""
        self._listeners.append(listener)

    def ephemeral(self, event_type: type) -> None:
        """Mark ``event_type`` ephemeral (typing, presence, speaking): the first thing
        a congested client goes without, skipped before it takes a sequence number."""
        self._ephemeral = (*self._ephemeral, event_type)

    def is_control(self, event: object) -> bool:
        return isinstance(event, self._types)

    def is_ephemeral(self, event: object) -> bool:
        return isinstance(event, self._ephemeral)

    def apply(self, session: Session, topic: str, event: object) -> bool:
        """Update ``session``'s view for ``event``; False if it must not see it."""
        for handler in self._handlers.get(type(event), ()):
            if not handler(session, topic, event):
                return False
        return True

    def view_changed(self, session: Session, event: Event | None) -> None:
        for listener in self._listeners:
            listener(session, event)
