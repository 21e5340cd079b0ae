"""Automod rules on the wire: what a moderator saves, what the REST API returns.

A rule is a *trigger* (what to look for: a tagged union on ``type``), a list of
*actions* (what to do on a hit), a *scope* (the whole community or one channel and its
threads) and *exemptions* (roles, channels, moderators). The server compiles every
rule once when it is saved or loaded (``rooms/moderation/automod.py``); the limits below bound
what one rule may cost, so that all rules of a community fit the per-message budget
(5 ms p99, see docs/moderation.md).

Same evolution rule as every wire type: new fields only with defaults.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from protocol.models import Role

MAX_RULES_PER_COMMUNITY = 50
"""Rules (enabled or not) one community may hold."""
MAX_KEYWORDS = 1000
"""Keywords in one keyword rule (the allow list has its own bound)."""
MAX_KEYWORD_CHARS = 60
"""Longest keyword or allow-list entry."""
MAX_ALLOW = 100
"""Entries in one allow list."""
MAX_LIST_CHARS_PER_COMMUNITY = 10_000
"""Characters in all keyword lists, allow lists and patterns of one community together:
keeps the compiled matchers (and their per-message cost) within the budget."""
MAX_PATTERNS = 10
"""Regular expressions in one regex rule."""
MAX_PATTERN_CHARS = 260
"""Longest regular expression."""
MAX_DOMAINS = 100
"""Domains in a link rule's allow or block list."""
MAX_NAME_CHARS = 100
"""Longest rule name."""
MAX_WINDOW_S = 3600
"""Longest window of a rate or duplicate rule."""
MAX_TIMEOUT_S = 28 * 24 * 3600
"""Longest timeout an automod rule may give (28 days)."""

DEFAULT_INVITE_HOSTS = ("discord.gg", "discord.com/invite", "discordapp.com/invite", "t.me",
                        "chat.whatsapp.com", "matrix.to")
"""Hosts (optionally with a path prefix) whose links are invites to another server."""

Count = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Window = Annotated[float, msgspec.Meta(gt=0, le=MAX_WINDOW_S)]


class KeywordTrigger(msgspec.Struct, tag="keyword", kw_only=True, frozen=True):
    """Hit when the message contains one of ``keywords``.

    ``word`` matches the whole word only; ``word*`` words starting with it; ``*word``
    words ending with it; ``*word*`` anywhere. Matching is case-insensitive and runs on
    the normalised text (see docs/moderation.md). A hit inside an ``allow`` match (same
    wildcard syntax) does not count: ``*ass*`` with ``allow: ["class"]``.
    """

    keywords: list[str]
    allow: list[str] = []


class RegexTrigger(msgspec.Struct, tag="regex", kw_only=True, frozen=True):
    """Hit when one of ``patterns`` (Python syntax, case-insensitive, run on the
    normalised text) matches, outside any ``allow`` keyword match. Patterns that could
    backtrack catastrophically are refused when the rule is saved."""

    patterns: list[str]
    allow: list[str] = []


class LinkTrigger(msgspec.Struct, tag="links", kw_only=True, frozen=True):
    """Hit on a link to a host outside ``allowed_domains`` (when that list is not
    empty) or inside ``blocked_domains``. A domain covers its subdomains."""

    allowed_domains: list[str] = []
    blocked_domains: list[str] = []


class LinkSpamTrigger(msgspec.Struct, tag="link_spam", kw_only=True, frozen=True):
    """Hit on more than ``max_links`` links, or (``block_invites``) on any invite link
    to another server: a host in ``invite_hosts`` or a ``/invite/`` path."""

    max_links: Count = 5
    block_invites: bool = True
    invite_hosts: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_INVITE_HOSTS))


class MentionSpamTrigger(msgspec.Struct, tag="mention_spam", kw_only=True, frozen=True):
    """Hit on more than ``max_mentions`` distinct mentions (users, roles, and
    ``@everyone``/``@here`` counting one each)."""

    max_mentions: Count = 10


class RateTrigger(msgspec.Struct, tag="rate", kw_only=True, frozen=True):
    """Hit when a member sends more than ``max_messages`` in ``window_s`` seconds
    (in the rule's scope, counted by the gateway process serving the member)."""

    max_messages: Count = 5
    window_s: Window = 5.0


class DuplicateTrigger(msgspec.Struct, tag="duplicate", kw_only=True, frozen=True):
    """Hit when the same normalised text is sent more than ``max_duplicates`` times in
    ``window_s`` seconds, by one member (or by anyone, with ``across_members``)."""

    max_duplicates: Count = 2
    window_s: Window = 30.0
    across_members: bool = False


class CapsTrigger(msgspec.Struct, tag="caps", kw_only=True, frozen=True):
    """Hit when more than ``max_percent`` of the letters are capitals and the message
    has at least ``min_letters`` letters (so "OK" is fine)."""

    max_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 70
    min_letters: Annotated[int, msgspec.Meta(ge=1, le=4000)] = 10


Trigger = (KeywordTrigger | RegexTrigger | LinkTrigger | LinkSpamTrigger | MentionSpamTrigger
           | RateTrigger | DuplicateTrigger | CapsTrigger)


class AutomodAction(enum.StrEnum):
    """What a hit does. ``block`` refuses the message (``automod_blocked``, nothing is
    stored); ``flag`` accepts it and puts it in the review queue; ``timeout`` times the
    sender out for ``timeout_s``; ``alert`` posts the hit to the live moderator feed."""

    BLOCK = "block"
    FLAG = "flag"
    TIMEOUT = "timeout"
    ALERT = "alert"


class AutomodRuleBody(msgspec.Struct, kw_only=True, frozen=True):
    """What a client sends to create or replace a rule."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
    trigger: Trigger
    actions: Annotated[list[AutomodAction], msgspec.Meta(min_length=1, max_length=4)]
    channel_id: int | None = None
    """None: the whole community; else that channel and its threads."""
    enabled: bool = True
    timeout_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_S)] = 600
    exempt_roles: list[Role] = []
    """Fixed roles the rule ignores."""
    exempt_role_ids: list[int] = []
    """Custom role ids the rule ignores."""
    exempt_channel_ids: list[int] = []
    exempt_moderators: bool = True
    """Members with manage-messages or moderate in the channel are not checked."""


class AutomodRule(msgspec.Struct, kw_only=True, frozen=True):
    """A saved rule (REST replies)."""

    id: int
    community_id: int
    name: str
    trigger: Trigger
    actions: list[AutomodAction]
    channel_id: int | None = None
    enabled: bool = True
    timeout_s: int = 600
    exempt_roles: list[Role] = []
    exempt_role_ids: list[int] = []
    exempt_channel_ids: list[int] = []
    exempt_moderators: bool = True
    created_by: int | None = None
    created_at: int = 0
    updated_at: int = 0

    def body(self) -> AutomodRuleBody:
        return AutomodRuleBody(
            name=self.name, trigger=self.trigger, actions=self.actions,
            channel_id=self.channel_id, enabled=self.enabled, timeout_s=self.timeout_s,
            exempt_roles=self.exempt_roles, exempt_role_ids=self.exempt_role_ids,
            exempt_channel_ids=self.exempt_channel_ids,
            exempt_moderators=self.exempt_moderators)
