"""``docs/events.md`` is generated from ``protocol/domain_events.py`` and must stay that way."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest

from protocol import domain_events
from protocol.events_doc import REGENERATE, event_types, render_events_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def test_docs_are_regenerated() -> None:
    assert DOC.read_text(encoding="utf-8") == render_events_markdown(), (
        "docs/events.md is out of date; regenerate it with\n" + REGENERATE)


@pytest.mark.parametrize("cls", event_types(), ids=lambda c: c.__struct_config__.tag)
def test_every_event_has_a_section_and_round_trips(cls: type[msgspec.Struct]) -> None:
    tag = cls.__struct_config__.tag
    rendered = render_events_markdown()
    assert f"### `{tag}`" in rendered
    assert f'"type": "{tag}"' in rendered


def test_unknown_tags_are_skipped_not_fatal() -> None:
    """A newer writer's event is None to an older reader, not an exception."""
    assert domain_events.decode_event(b'{"type": "course_completed", "x": 1}') is None
    event = domain_events.MemberLeft(community_id=1, user_id=2)
    assert domain_events.decode_event(domain_events.encode_event(event)) == event


def test_the_union_lists_every_event_struct() -> None:
    declared = {v for v in vars(domain_events).values()
                if isinstance(v, type) and issubclass(v, domain_events.DomainEventBase)
                and v is not domain_events.DomainEventBase}
    assert declared == set(typing.get_args(domain_events.DomainEvent))
