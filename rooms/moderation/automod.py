"""Automod: compile a community's rules once, check each message against them, no I/O.

The send path calls :meth:`RuleSet.evaluate` synchronously before a message is
accepted, so everything expensive happens in :func:`compile_rule` (when a rule is saved
or loaded): keyword lists become one trie-shaped regular expression per rule,
regular expressions are checked for catastrophic backtracking (:func:`check_pattern`)
and compiled for a linear-time engine (RE2) when it is installed. Per message, the
text is normalised once (:class:`MessageView`, lazily: a rule set without keyword rules
never folds the text) and every rule reads the same view.

Normalisation (against simple evasion, both keywords and text go through it):

* ``fold``: Unicode NFKD, then combining marks (``Mn``) and format characters (``Cf``:
  zero-width space/joiners, word joiner, BOM, soft hyphen, bidi controls) are dropped,
  then NFKC and ``casefold``, and runs of whitespace become one space. So fullwidth
  ``ＢＡＤ``, ``b\u200bad``, ``bád`` and ``BAD`` all read ``bad``.
* ``skeleton`` (keywords only): ``fold`` plus a small table of Cyrillic and Greek
  letters that look like Latin ones (``а`` -> ``a``, ``ο`` -> ``o``...).

Not handled (documented in docs/moderation.md): spaced or punctuated letters
(``b.a.d``), leetspeak (``b4d``), and homoglyphs outside the table.

Stateful rules (message rate, duplicates) keep small bounded windows in a
:class:`SpamState` owned by the caller (one per process): counts are per gateway
process, which serves all of a member's traffic on that node.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import random
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.automod import (
    MAX_ALLOW,
    MAX_DOMAINS,
    MAX_KEYWORD_CHARS,
    MAX_KEYWORDS,
    MAX_PATTERNS,
    AutomodAction,
    AutomodRule,
    CapsTrigger,
    DuplicateTrigger,
    KeywordTrigger,
    LinkSpamTrigger,
    LinkTrigger,
    MentionSpamTrigger,
    RateTrigger,
    RegexTrigger,
)
from protocol.models import Role
from rooms.moderation import automod_regex
from rooms.moderation.automod_regex import Matcher
from rooms.moderation.automod_regex import (
    RuleError as RuleError,  # re-exported: callers catch it here
)
from rooms.moderation.automod_regex import check_pattern as check_pattern

# ------------------------------------------------------------------------- normalising

_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c",
})
def _deletions(categories: frozenset[str]) -> dict[int, None]:
    """A ``str.translate`` table deleting every code point in ``categories`` (built once
    at import, ~50 ms: planes 0-2 and the tags/variation-selector block of plane 14
    hold them all); translate is one C loop, unlike a Python loop per character."""
    return {cp: None for lo, hi in ((0, 0x2FFFF), (0xE0000, 0xE0FFF))
            for cp in range(lo, hi + 1) if unicodedata.category(chr(cp)) in categories}


_DROPPED = _deletions(frozenset({"Mn", "Cf"}))
"""Combining marks and format characters (zero-width space/joiners, soft hyphen...)."""


def fold(text: str) -> str:
    """The comparison form of ``text`` (see the module docstring)."""
    if text.isascii():  # the common case: nothing to decompose or drop
        return " ".join(text.lower().split())
    kept = unicodedata.normalize("NFKD", text).translate(_DROPPED)
    return " ".join(unicodedata.normalize("NFKC", kept).casefold().split())


def skeleton(text: str) -> str:
    """``fold`` plus the look-alike table: what keywords are matched against."""
    folded = fold(text)
    return folded if folded.isascii() else folded.translate(_CONFUSABLES)


# ----------------------------------------------------------------------- message view

_SCHEME_URL = re.compile(r"([a-z][a-z0-9+.-]{0,15})://([^\s/?#<>\"'()\[\]]+)"
                         r"([^\s<>\"'()\[\]]*)")
_HOST = re.compile(r"[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_BARE_TLDS = frozenset(
    "com net org io gg co me ru xyz info ly app dev tk link site online club biz us uk de "
    "tv fr nl eu cn ws to cc sh ai gl".split())
_TOKEN_STRIP = "<>()[]{}\"'.,!?;:*_~`|"
_USER_MENTION = re.compile(r"<@!?(\d{1,16})>")
_ROLE_MENTION = re.compile(r"<@&([^>\s]{1,32})>")
_MASS_MENTION = re.compile(r"(?<![\w`])@(everyone|here)\b")
_DELETE_UPPER = str.maketrans("", "", string.ascii_uppercase)
_DELETE_LETTERS = str.maketrans("", "", string.ascii_letters)


@dataclass(frozen=True, slots=True)
class Link:
    host: str
    """Lower-case host, no port, no user info, no trailing dot."""
    rest: str
    """Host and everything after it (``host/path?query``), folded."""


def _clean_host(raw: str) -> str:
    host = raw.rpartition("@")[2]
    if host.startswith("["):  # IPv6 literal
        return host
    return host.partition(":")[0].strip(".")


def extract_links(folded: str) -> list[Link]:
    """Links in folded text: ``scheme://host...``, ``www.host...``, and bare
    ``host.tld/...`` or ``host.tld`` where the TLD is a common one. Linear: one
    regex pass with bounded repeats, then one pass over whitespace-separated tokens."""
    links: list[Link] = []
    if "://" in folded:
        for m in _SCHEME_URL.finditer(folded):
            host = _clean_host(m.group(2))
            if host:
                links.append(Link(host, host + m.group(3)))
    if "." not in folded:
        return links
    for token in folded.split():
        if "://" in token or "." not in token:
            continue
        token = token.strip(_TOKEN_STRIP)
        head, slash, tail = token.partition("/")
        if "@" in head:  # an e-mail address (or a mention), not a link
            continue
        host = _clean_host(head)
        if not _HOST.fullmatch(host):
            continue
        if host.startswith("www.") or (slash and host.rpartition(".")[2].isalpha()) or \
                host.rpartition(".")[2] in _BARE_TLDS:
            links.append(Link(host, host + slash + tail))
    return links


def _host_in(host: str, domain: str) -> bool:
    """``domain`` covers itself and its subdomains."""
    return host == domain or host.endswith("." + domain)


class MessageView:
    """One message as the rules see it; each form is computed at most once."""

    __slots__ = ("_caps", "_folded", "_links", "_mentions", "_skeleton", "content")

    def __init__(self, content: str) -> None:
        self.content = content
        self._folded: str | None = None
        self._skeleton: str | None = None
        self._links: list[Link] | None = None
        self._mentions: int | None = None
        self._caps: tuple[int, int] | None = None

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = fold(self.content)
        return self._folded

    @property
    def skeleton(self) -> str:
        if self._skeleton is None:
            folded = self.folded
            self._skeleton = folded if folded.isascii() else folded.translate(_CONFUSABLES)
        return self._skeleton

    @property
    def links(self) -> list[Link]:
        if self._links is None:
            self._links = extract_links(self.folded)
        return self._links

    @property
    def mentions(self) -> int:
        """Distinct user and role mentions, plus one each for @everyone and @here."""
        if self._mentions is None:
            text = self.content
            self._mentions = (len(set(_USER_MENTION.findall(text)))
                              + len(set(_ROLE_MENTION.findall(text)))
                              + len(set(_MASS_MENTION.findall(text))))
        return self._mentions

    def caps(self) -> tuple[int, int]:
        """(upper-case letters, letters)."""
        if self._caps is None:
            self._caps = _count_caps(self.content)
        return self._caps


def _count_caps(text: str) -> tuple[int, int]:
    if text.isascii():
        return (len(text) - len(text.translate(_DELETE_UPPER)),
                len(text) - len(text.translate(_DELETE_LETTERS)))
    upper = letters = 0
    for c in unicodedata.normalize("NFKC", text):
        if c.isalpha():
            letters += 1
            upper += c.isupper()
    return upper, letters


# -------------------------------------------------------------------------- keywords

class _Shape(enum.Enum):
    WORD = "word"          # whole word
    PREFIX = "prefix"      # word*
    SUFFIX = "suffix"      # *word
    ANYWHERE = "anywhere"  # *word*


def _parse_keyword(raw: str) -> tuple[_Shape, str]:
    text = raw.strip()
    lead, trail = text.startswith("*"), text.endswith("*") and len(text) > 1
    core = text[1 if lead else 0:len(text) - 1 if trail else len(text)]
    if "*" in core:
        raise RuleError(f"keyword {raw!r}: a * goes only at the start or the end")
    folded = skeleton(core)
    if not folded:
        raise RuleError(f"keyword {raw!r} is empty after normalisation")
    if len(raw) > MAX_KEYWORD_CHARS:
        raise RuleError(f"keyword {raw[:20]!r}... is longer than {MAX_KEYWORD_CHARS} characters")
    shape = (_Shape.ANYWHERE if lead and trail else _Shape.SUFFIX if lead
             else _Shape.PREFIX if trail else _Shape.WORD)
    return shape, folded


def _trie(words: Iterable[str]) -> str:
    """A regex matching exactly ``words``, shaped as a trie: alternatives at each level
    start with distinct characters, so a failed branch is abandoned after one
    character and the cost per text position is bounded by the longest word."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        end = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 and not end else "(?:" + "|".join(branches) + ")"
        if end:
            return body + "?" if body.startswith("(?:") else "(?:" + body + ")?"
        return body

    return build(root)


_NOT_WORD = r"[^\pL\pN_]"
"""A non-word character for RE2, whose ``\\w`` and ``\\b`` are ASCII-only."""


_warm_rng = random.Random(4242)  # fixed seed: the same text on every node and run
_WARM_TEXT = " ".join("".join(_warm_rng.choices(string.ascii_lowercase, k=_warm_rng.randint(1, 11)))
                      for _ in range(650))
"""~4,000 characters of letter soup: one pass warms a keyword matcher's DFA for the
long, word-like texts whose first sighting is otherwise the slow one."""


class KeywordMatcher:
    """A keyword list (wildcard syntax) as one pattern, matched on skeleton text.

    On RE2 (linear time, about ten times faster here than ``re`` on long messages) the
    word boundaries are consumed non-word characters around a capturing group per
    shape; on ``re`` they are Unicode lookarounds. Either way the trie shape keeps
    the work per text position bounded by the longest keyword.
    """

    __slots__ = ("_groups", "_regex")

    def __init__(self, entries: Sequence[str]) -> None:
        re2 = automod_regex.re2_module()
        shapes: dict[_Shape, set[str]] = {shape: set() for shape in _Shape}
        for entry in entries:
            shape, word = _parse_keyword(entry)
            shapes[shape].add(word)
        parts = []
        for shape, words in shapes.items():
            if not words:
                continue
            trie = _trie(sorted(words))
            left_open = shape in (_Shape.SUFFIX, _Shape.ANYWHERE)
            right_open = shape in (_Shape.PREFIX, _Shape.ANYWHERE)
            if re2 is not None:
                parts.append(("" if left_open else f"(?:^|{_NOT_WORD})") + f"({trie})"
                             + ("" if right_open else f"(?:$|{_NOT_WORD})"))
            else:
                parts.append(("" if left_open else r"(?<!\w)") + f"({trie})"
                             + ("" if right_open else r"(?!\w)"))
        self._groups = range(1, len(parts) + 1)
        pattern = "|".join(parts)
        self._regex: Any = (re2.compile(pattern, automod_regex.re2_options())
                            if re2 is not None else re.compile(pattern))
        # RE2 builds the reverse program and DFA states lazily (a few ms for a long list
        # on the first hit, up to ~1 ms per new kind of text until warm): pay most of
        # that here, at save/load time, not in the send path.
        for words in shapes.values():
            if words:
                self.search(f" {min(words)} ", 0)
        if re2 is not None:
            self.search(_WARM_TEXT, 0)

    def search(self, text: str, pos: int) -> tuple[int, int] | None:
        m = self._regex.search(text, pos)
        if m is None:
            return None
        for group in self._groups:
            span: tuple[int, int] = m.span(group)
            if span[0] >= 0:
                return span
        return None  # pragma: no cover - one group always takes part in a match


def compile_keywords(entries: Sequence[str]) -> KeywordMatcher | None:
    """The matcher of a keyword list, or None for an empty list."""
    return KeywordMatcher(entries) if entries else None


# -------------------------------------------------------------------------- rules

@dataclass(frozen=True, slots=True)
class Author:
    """Who sends, as far as exemptions care."""

    user_id: int
    role: Role | None
    role_ids: frozenset[int] = frozenset()
    """Custom role ids the member holds in the community."""
    moderator: bool = False
    """Holds manage-messages or moderate in the channel."""


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule that matched: what to do, and (for moderators only) why."""

    rule_id: int
    rule_name: str
    actions: frozenset[AutomodAction]
    timeout_s: int
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    hits: tuple[Hit, ...] = ()

    @property
    def blocked_by(self) -> Hit | None:
        return next((h for h in self.hits if AutomodAction.BLOCK in h.actions), None)

    def wants(self, action: AutomodAction) -> list[Hit]:
        return [h for h in self.hits if action in h.actions]


class SpamState:
    """Sliding windows for the rate and duplicate rules: at most ``max_keys`` keys (the
    least recently used is forgotten), each a deque of at most N+1 timestamps."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._windows: collections.OrderedDict[tuple[int, int, bytes],
                                               collections.deque[float]] = \
            collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def count(self, key: tuple[int, int, bytes], now: float, window_s: float,
              limit: int) -> bool:
        """Record one event at ``now``; True if more than ``limit`` fall in the window."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = collections.deque(maxlen=limit + 1)
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        while window and window[0] <= now - window_s:
            window.popleft()
        window.append(now)
        return len(window) > limit


class CompiledRule:
    """One rule, ready to evaluate. Subclasses implement :meth:`match`."""

    stateful = False

    def __init__(self, rule: AutomodRule) -> None:
        self.rule = rule
        self.id = rule.id
        self.actions = frozenset(rule.actions)
        self.exempt_roles = frozenset(rule.exempt_roles)
        self.exempt_role_ids = frozenset(rule.exempt_role_ids)
        self.exempt_channels = frozenset(rule.exempt_channel_ids)

    def applies(self, author: Author, channel_id: int, parent_id: int | None) -> bool:
        rule = self.rule
        if not rule.enabled:
            return False
        if rule.channel_id is not None and rule.channel_id not in (channel_id, parent_id):
            return False
        if channel_id in self.exempt_channels or parent_id in self.exempt_channels:
            return False
        if rule.exempt_moderators and author.moderator:
            return False
        if author.role is not None and author.role in self.exempt_roles:
            return False
        return not (self.exempt_role_ids and self.exempt_role_ids & author.role_ids)

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        """Why the message hits this rule, or None."""
        raise NotImplementedError


def _first_unallowed(search: Any, text: str, allow: KeywordMatcher | None,
                     allow_text: str) -> str | None:
    """The first hit of ``search(text, pos) -> span`` not inside a match of ``allow`` in
    ``allow_text`` (the skeleton of ``text``: same length, so spans line up); after an
    allowed hit the search resumes one character later, so overlapping hits are seen.
    The allow list is only searched once there is a hit."""
    allowed: list[tuple[int, int]] | None = None
    pos = 0
    while pos <= len(text):
        span = search(text, pos)
        if span is None:
            return None
        start, end = span
        if allowed is None:
            allowed = _allow_spans(allow, allow_text)
        if not any(a <= start and end <= b for a, b in allowed):
            return text[start:end]
        pos = start + 1
    return None


def _allow_spans(allow: KeywordMatcher | None, text: str) -> list[tuple[int, int]]:
    if allow is None:
        return []
    spans = []
    pos = 0
    while (span := allow.search(text, pos)) is not None:
        spans.append(span)
        pos = span[0] + 1
    return spans


class _KeywordRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: KeywordTrigger) -> None:
        super().__init__(rule)
        if not trigger.keywords:
            raise RuleError("a keyword rule needs at least one keyword")
        if len(trigger.keywords) > MAX_KEYWORDS:
            raise RuleError(f"at most {MAX_KEYWORDS} keywords per rule")
        if len(trigger.allow) > MAX_ALLOW:
            raise RuleError(f"at most {MAX_ALLOW} allow-list entries per rule")
        self.keywords = KeywordMatcher(trigger.keywords)
        self.allow = compile_keywords(trigger.allow)

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        text = view.skeleton
        found = _first_unallowed(self.keywords.search, text, self.allow, text)
        return f"keyword {found!r}" if found is not None else None


class _RegexRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: RegexTrigger) -> None:
        super().__init__(rule)
        if not trigger.patterns:
            raise RuleError("a regex rule needs at least one pattern")
        if len(trigger.patterns) > MAX_PATTERNS:
            raise RuleError(f"at most {MAX_PATTERNS} patterns per rule")
        if len(trigger.allow) > MAX_ALLOW:
            raise RuleError(f"at most {MAX_ALLOW} allow-list entries per rule")
        for pattern in trigger.patterns:
            check_pattern(pattern)
        self.matchers = [(Matcher(p), p) for p in trigger.patterns]
        self.allow = compile_keywords(trigger.allow)

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        text = view.folded
        for matcher, source in self.matchers:
            found = _first_unallowed(matcher.search, text, self.allow, view.skeleton)
            if found is not None:
                return f"pattern {source!r} matched {found!r}"
        return None


def _domains(entries: list[str]) -> tuple[str, ...]:
    if len(entries) > MAX_DOMAINS:
        raise RuleError(f"at most {MAX_DOMAINS} domains per list")
    out = []
    for entry in entries:
        host = _clean_host(fold(entry).removeprefix("https://").removeprefix("http://")
                           .partition("/")[0]).removeprefix("*.")
        if not _HOST.fullmatch(host):
            raise RuleError(f"{entry!r} is not a domain")
        out.append(host)
    return tuple(out)


class _LinkRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: LinkTrigger) -> None:
        super().__init__(rule)
        self.allowed = _domains(trigger.allowed_domains)
        self.blocked = _domains(trigger.blocked_domains)
        if not self.allowed and not self.blocked:
            raise RuleError("a link rule needs allowed_domains or blocked_domains")

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        for link in view.links:
            if any(_host_in(link.host, d) for d in self.blocked):
                return f"blocked domain {link.host}"
            if self.allowed and not any(_host_in(link.host, d) for d in self.allowed):
                return f"link to {link.host} (not an allowed domain)"
        return None


class _LinkSpamRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: LinkSpamTrigger) -> None:
        super().__init__(rule)
        self.trigger = trigger
        if len(trigger.invite_hosts) > MAX_DOMAINS:
            raise RuleError(f"at most {MAX_DOMAINS} invite hosts")
        self.invite_hosts = tuple(fold(h).strip("/") for h in trigger.invite_hosts)

    def _is_invite(self, link: Link) -> bool:
        if "/invite/" in link.rest or "/invites/" in link.rest:
            return True
        for entry in self.invite_hosts:
            host, _, path = entry.partition("/")
            if _host_in(link.host, host) and (
                    not path or link.rest.partition("/")[2].startswith(path + "/")):
                return True
        return False

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        links = view.links
        if len(links) > self.trigger.max_links:
            return f"{len(links)} links (more than {self.trigger.max_links})"
        if self.trigger.block_invites:
            for link in links:
                if self._is_invite(link):
                    return f"invite link {link.rest[:80]}"
        return None


class _MentionRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: MentionSpamTrigger) -> None:
        super().__init__(rule)
        self.max = trigger.max_mentions

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        if "@" not in view.content:
            return None
        count = view.mentions
        return f"{count} mentions (more than {self.max})" if count > self.max else None


class _RateRule(CompiledRule):
    stateful = True

    def __init__(self, rule: AutomodRule, trigger: RateTrigger) -> None:
        super().__init__(rule)
        self.trigger = trigger

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        t = self.trigger
        if state.count((self.id, author.user_id, b""), now, t.window_s, t.max_messages):
            return f"more than {t.max_messages} messages in {t.window_s:g} s"
        return None


class _DuplicateRule(CompiledRule):
    stateful = True

    def __init__(self, rule: AutomodRule, trigger: DuplicateTrigger) -> None:
        super().__init__(rule)
        self.trigger = trigger

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        t = self.trigger
        digest = hashlib.blake2b(view.folded.encode(), digest_size=12).digest()
        key = (self.id, 0 if t.across_members else author.user_id, digest)
        if state.count(key, now, t.window_s, t.max_duplicates):
            return f"same text more than {t.max_duplicates} times in {t.window_s:g} s"
        return None


class _CapsRule(CompiledRule):
    def __init__(self, rule: AutomodRule, trigger: CapsTrigger) -> None:
        super().__init__(rule)
        self.trigger = trigger

    def match(self, view: MessageView, author: Author, now: float,
              state: SpamState) -> str | None:
        t = self.trigger
        if len(view.content) < t.min_letters:
            return None
        upper, letters = view.caps()
        if letters >= t.min_letters and upper * 100 > t.max_percent * letters:
            return f"{upper * 100 // letters}% capitals"
        return None


_KINDS: dict[type[Any], type[CompiledRule]] = {
    KeywordTrigger: _KeywordRule, RegexTrigger: _RegexRule, LinkTrigger: _LinkRule,
    LinkSpamTrigger: _LinkSpamRule, MentionSpamTrigger: _MentionRule, RateTrigger: _RateRule,
    DuplicateTrigger: _DuplicateRule, CapsTrigger: _CapsRule,
}


def list_chars(trigger: object) -> int:
    """Characters a trigger's lists weigh against ``MAX_LIST_CHARS_PER_COMMUNITY``."""
    if isinstance(trigger, KeywordTrigger):
        return sum(map(len, trigger.keywords)) + sum(map(len, trigger.allow))
    if isinstance(trigger, RegexTrigger):
        return sum(map(len, trigger.patterns)) + sum(map(len, trigger.allow))
    return 0


def compile_rule(rule: AutomodRule) -> CompiledRule:
    """Check and compile one rule; :class:`RuleError` says what is wrong with it."""
    if AutomodAction.BLOCK in rule.actions and AutomodAction.FLAG in rule.actions:
        raise RuleError("block and flag exclude each other: a blocked message is not stored")
    kind = _KINDS[type(rule.trigger)]
    compiled: CompiledRule = kind(rule, rule.trigger)  # type: ignore[call-arg]
    return compiled


class RuleSet:
    """A community's compiled rules. Immutable; replaced as a whole when rules change."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules = tuple(rules)
        self.needs_role_ids = any(r.exempt_role_ids for r in self.rules)
        self.needs_moderator = any(r.rule.exempt_moderators for r in self.rules)

    @classmethod
    def compile(cls, rules: Iterable[AutomodRule]) -> tuple[RuleSet, list[tuple[int, str]]]:
        """Compile saved rules; a rule that no longer compiles (e.g. a stricter check
        after an upgrade) is left out and reported as (rule id, why), never fatal."""
        good: list[CompiledRule] = []
        bad: list[tuple[int, str]] = []
        for rule in rules:
            try:
                good.append(compile_rule(rule))
            except RuleError as exc:
                bad.append((rule.id, str(exc)))
        return cls(good), bad

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(self, content: str, author: Author, channel_id: int, parent_id: int | None,
                 now: float, state: SpamState, *, new_message: bool = True) -> Verdict:
        """Check one message. ``new_message=False`` (an edit) skips the rate and
        duplicate rules: an edit is not another message."""
        if not self.rules:
            return Verdict()
        view = MessageView(content)
        hits = []
        for rule in self.rules:
            if (rule.stateful and not new_message) or not rule.applies(
                    author, channel_id, parent_id):
                continue
            reason = rule.match(view, author, now, state)
            if reason is not None:
                r = rule.rule
                hits.append(Hit(rule.id, r.name, rule.actions, r.timeout_s, reason))
        return Verdict(tuple(hits))

