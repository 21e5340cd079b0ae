"""Automod rules, pure: each rule type hits what it should and lets the rest through.

No server, no database: rules are compiled and messages evaluated in memory, exactly as
the send path does (``rooms/moderation/automod.py``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from protocol.automod import (
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
from rooms.moderation.automod import (
    Author,
    RuleError,
    RuleSet,
    SpamState,
    Verdict,
    check_pattern,
    compile_rule,
    extract_links,
    fold,
    skeleton,
)

_ids = itertools.count(1)
MEMBER = Author(user_id=7, role=Role.MEMBER)
CHANNEL = 10


def make_rule(trigger: Any, actions: tuple[str, ...] = ("block",), **kw: Any) -> AutomodRule:
    return AutomodRule(id=next(_ids), community_id=1, name=kw.pop("name", "rule"),
                       trigger=trigger, actions=[AutomodAction(a) for a in actions], **kw)


def evaluate(trigger: Any, text: str, *, author: Author = MEMBER, channel: int = CHANNEL,
             parent: int | None = None, state: SpamState | None = None, now: float = 0.0,
             **kw: Any) -> Verdict:
    rules = RuleSet([compile_rule(make_rule(trigger, **kw))])
    return rules.evaluate(text, author, channel, parent, now, state or SpamState())


def hits(trigger: Any, text: str, **kw: Any) -> bool:
    return bool(evaluate(trigger, text, **kw).hits)


# ------------------------------------------------------------------------ normalising

def test_fold_undoes_simple_evasion() -> None:
    assert fold("ＢＡＤ") == "bad"                      # fullwidth
    assert fold("b\u200bad\u2060") == "bad"             # zero-width space, word joiner
    assert fold("b\u00adad") == "bad"                   # soft hyphen
    assert fold("bád") == "bad"                         # combining accent dropped
    assert fold("  Many   spaces\n\there ") == "many spaces here"
    assert fold("STRASSE") == fold("straße") == "strasse"
    assert skeleton("bаd") == "bad"                     # Cyrillic а
    assert fold("bаd") != "bad"                         # ...only keywords use the table


# --------------------------------------------------------------------------- keywords

@pytest.mark.parametrize(("keyword", "text", "expected"), [
    ("bad", "this is bad!", True),
    ("bad", "BAD", True),
    ("bad", "a badge", False),
    ("bad", "sinbad", False),
    ("win*", "a winner", True),
    ("win*", "twin", False),
    ("*ing", "we sing", True),
    ("*ing", "an ingot", False),
    ("*ass*", "a classic", True),
    ("free nitro", "get FREE   Nitro now", True),
    ("free nitro", "free nitrogen", False),
    ("bad", "ＢＡＤ", True),
    ("bad", "b\u200bad", True),
    ("bad", "bаd", True),                                # Cyrillic а
    ("bad", "bád", True),
    ("café", "CAFE", True),
    ("*垃圾*", "这是垃圾信息", True),                      # no spaces in Chinese: use *...*
    ("垃圾", "这是垃圾信息", False),
])
def test_keywords(keyword: str, text: str, expected: bool) -> None:
    assert hits(KeywordTrigger(keywords=[keyword]), text) is expected


def test_keyword_allow_list() -> None:
    trigger = KeywordTrigger(keywords=["*ass*"], allow=["class", "bass*"])
    assert not hits(trigger, "a class of students")
    assert not hits(trigger, "the bassist plays")
    assert hits(trigger, "class, you ass")            # a second, unallowed hit counts
    assert hits(trigger, "kick ass")


def test_keyword_hit_reason_names_the_word() -> None:
    verdict = evaluate(KeywordTrigger(keywords=["spam", "scam"]), "a SCAM here")
    assert verdict.hits[0].reason == "keyword 'scam'"


def test_many_keywords_share_prefixes() -> None:
    words = [f"word{i}" for i in range(1000)]
    trigger = KeywordTrigger(keywords=words)
    assert hits(trigger, "say word999 now")
    assert not hits(trigger, "say word1000 now")    # whole word: word1000 is not listed
    assert hits(trigger, "say word100 now")


@pytest.mark.parametrize("bad", [["f*ck"], ["*"], ["\u200b"], []])
def test_bad_keywords_are_refused(bad: list[str]) -> None:
    with pytest.raises(RuleError):
        compile_rule(make_rule(KeywordTrigger(keywords=bad)))


# ------------------------------------------------------------------------------ regex

def test_regex_rules() -> None:
    trigger = RegexTrigger(patterns=[r"free\s+nitro", r"[A-Z]{3}\d{2}"])
    assert hits(trigger, "FREE  Nitro for all")
    assert hits(trigger, "code abc12")                # case-insensitive
    assert hits(trigger, "ｆｒｅｅ nitro")              # normalised text
    assert not hits(trigger, "nitro is fast")


def test_regex_allow_list() -> None:
    trigger = RegexTrigger(patterns=[r"nitro\w*"], allow=["nitrogen"])
    assert not hits(trigger, "nitrogen is a gas")
    assert hits(trigger, "nitrogen and nitro scams")
    assert hits(trigger, "nitroglycerin")
    cyrillic = RegexTrigger(patterns=[r"привет\pL*"], allow=["приветствие"])
    assert hits(cyrillic, "ПРИВЕТики")
    assert not hits(cyrillic, "официальное приветствие")   # allow entries match too


CATASTROPHIC = [
    (r"(a+)+$", "nested unbounded"),
    (r"(a*)*b", "can match nothing"),
    (r"(a|a)*b", "overlap"),
    (r"(?:\wa|\db)+c", "overlap"),
    (r"(.*a){20}", "nested unbounded"),
    (r"(x+x+)+y", "nested unbounded"),
    (r"(\w+\s?)+$", "nested unbounded"),
    (r"^(\d+)*$", "nested unbounded"),
    (r"(a?){25}a{25}", "match nothing"),
    (r"(?:a{1,10}){1,10}b", "too many ways"),
    (r"(a)\1", "backreferences"),
    (r"foo(?=bar)", "lookahead"),
    (r"(?<!x)foo", "lookahead and lookbehind"),
    (r"(?>a+)b", "not allowed"),
    (r"(a)?(?(1)b|c)", "backreferences"),
    (r"a*", "empty string"),
    (r"x" * 300, "longer than"),
    (r"(unclosed", "not a valid regular expression"),
    (r"(?:\pL+\s?)+$", "nested unbounded"),              # RE2 Unicode classes too
    (r"[[:alpha:]]+", "nested set"),                      # ambiguous between dialects
    (r"[a-z--aeiou]+", "set operation"),
]


@pytest.mark.parametrize(("pattern", "why"), CATASTROPHIC)
def test_catastrophic_regex_is_refused_with_a_reason(pattern: str, why: str) -> None:
    with pytest.raises(RuleError) as refused:
        check_pattern(pattern)
    assert why in str(refused.value)
    with pytest.raises(RuleError):  # and a rule holding it cannot be saved
        compile_rule(make_rule(RegexTrigger(patterns=["ok", pattern])))


@pytest.mark.parametrize("pattern", [
    r"free\s+nitro", r"(?:\d{1,3}\.){3}\d{1,3}", r"https?://\S+", r"[a-z]+\.(?:com|net)",
    r"^buy now", r"\d{3}-\d{4}", r"(?:ab|cd)+", r"(a|ab)*c", r"(\w|x)+y", r"\bcasino\b",
    r"(?:foo|bar)(?:baz)*", r"[^\x00-\x7f]{5,}", r"\p{Cyrillic}{5,}", r"[\pL\pN_]+coin",
])
def test_ordinary_regex_is_accepted(pattern: str) -> None:
    check_pattern(pattern)


def test_too_many_patterns() -> None:
    with pytest.raises(RuleError, match="at most 10 patterns"):
        compile_rule(make_rule(RegexTrigger(patterns=[f"p{i}" for i in range(11)])))


def test_saved_rule_that_no_longer_compiles_is_left_out() -> None:
    good = make_rule(KeywordTrigger(keywords=["bad"]))
    broken = make_rule(RegexTrigger(patterns=[r"(a+)+"]))
    rules, errors = RuleSet.compile([good, broken])
    assert len(rules) == 1
    assert errors[0][0] == broken.id and "nested" in errors[0][1]


# ------------------------------------------------------------------------------ links

def test_link_extraction() -> None:
    text = fold("see https://Docs.Example.com:8080/x?y, www.foo.org and discord.gg/abc; "
                "file.txt, e.g. this, user@mail.example.com, evil.ru")
    assert [link.host for link in extract_links(text)] == [
        "docs.example.com", "www.foo.org", "discord.gg", "evil.ru"]


def test_links_allowed_domains_cover_subdomains() -> None:
    trigger = LinkTrigger(allowed_domains=["example.com", "https://hearth.chat/"])
    assert not hits(trigger, "docs at https://docs.example.com/x and https://example.com")
    assert not hits(trigger, "https://hearth.chat/invite/abc")
    assert hits(trigger, "https://evil.com/x")
    assert hits(trigger, "https://notexample.com/x")    # a suffix is not a subdomain
    assert hits(trigger, "www.evil.org")
    assert hits(trigger, "https://ev\u200bil.com")       # zero-width inside the host
    assert not hits(trigger, "no links here, e.g. file.txt")


def test_links_blocked_domains() -> None:
    trigger = LinkTrigger(blocked_domains=["casino.example"])
    assert hits(trigger, "go to http://www.casino.example/win")
    assert not hits(trigger, "go to https://example.com")


def test_link_rule_needs_a_list() -> None:
    with pytest.raises(RuleError):
        compile_rule(make_rule(LinkTrigger()))
    with pytest.raises(RuleError, match="not a domain"):
        compile_rule(make_rule(LinkTrigger(allowed_domains=["not a domain"])))


def test_link_spam_counts_links() -> None:
    trigger = LinkSpamTrigger(max_links=2, block_invites=False)
    assert not hits(trigger, "https://a.com https://b.com")
    assert hits(trigger, "https://a.com https://b.com https://c.com")


def test_link_spam_invites() -> None:
    trigger = LinkSpamTrigger()
    assert hits(trigger, "join discord.gg/abcdef")
    assert hits(trigger, "join https://discord.com/invite/xyz")
    assert hits(trigger, "join https://other-hearth.example/invite/CODE")
    assert hits(trigger, "t.me/somechannel")
    assert not hits(trigger, "see https://discord.com/channels/1/2")
    assert not hits(LinkSpamTrigger(block_invites=False), "join discord.gg/abcdef")


# --------------------------------------------------------------------------- mentions

def test_mention_spam_counts_users_roles_and_everyone() -> None:
    trigger = MentionSpamTrigger(max_mentions=3)
    assert not hits(trigger, "<@1> <@2> <@3>")
    assert hits(trigger, "<@1> <@2> <@3> <@4>")
    assert not hits(trigger, "<@1> <@1> <@1> <@1> <@1>")      # distinct mentions
    assert hits(trigger, "<@1> <@&moderator> <@&55> @everyone")
    assert hits(trigger, "<@1> <@2> @here @everyone")
    assert not hits(trigger, "<@1> <@2> `@everyone` mail@everyone")


# ---------------------------------------------------------------------- rate, repeats

def test_message_rate_per_member() -> None:
    rules = RuleSet([compile_rule(make_rule(RateTrigger(max_messages=3, window_s=10)))])
    state = SpamState()
    other = Author(user_id=8, role=Role.MEMBER)

    def send(t: float, author: Author = MEMBER, new: bool = True) -> bool:
        return bool(rules.evaluate("hi", author, CHANNEL, None, t, state,
                                   new_message=new).hits)

    assert [send(t) for t in (0, 1, 2)] == [False, False, False]
    assert send(3, other) is False                   # someone else's messages are theirs
    assert send(4, new=False) is False               # an edit is not a new message
    assert send(5) is True                           # a 4th message within 10 s
    assert send(11.5) is False                       # 0 and 1 left: 2, 5, 11.5
    assert send(11.9) is True                        # 2, 5, 11.5, 11.9: four in 10 s


def test_duplicates() -> None:
    rules = RuleSet([compile_rule(make_rule(DuplicateTrigger(max_duplicates=2, window_s=30)))])
    state = SpamState()
    said = [bool(rules.evaluate(text, MEMBER, CHANNEL, None, t, state).hits)
            for t, text in enumerate(["Buy now!", "buy  NOW!", "hello", "ＢＵＹ now!"])]
    assert said == [False, False, False, True]       # third time the same normalised text
    assert not rules.evaluate("Buy now!", MEMBER, CHANNEL, None, 100, state).hits


def test_duplicates_across_members() -> None:
    trigger = DuplicateTrigger(max_duplicates=1, window_s=30, across_members=True)
    rules = RuleSet([compile_rule(make_rule(trigger))])
    state = SpamState()
    assert not rules.evaluate("raid text", MEMBER, CHANNEL, None, 0, state).hits
    other = Author(user_id=99, role=Role.MEMBER)
    assert rules.evaluate("raid text", other, CHANNEL, None, 1, state).hits


def test_spam_state_is_bounded() -> None:
    state = SpamState(max_keys=100)
    for user in range(1000):
        state.count((1, user, b""), 0.0, 10, 5)
    assert len(state) == 100


# ------------------------------------------------------------------------------- caps

def test_caps() -> None:
    trigger = CapsTrigger(max_percent=70, min_letters=10)
    assert hits(trigger, "HELLO EVERYONE THIS IS LOUD")
    assert hits(trigger, "ＨＥＬＬＯ ＥＶＥＲＹＯＮＥ")                # fullwidth capitals
    assert hits(trigger, "ÉCOUTEZ TOUS, C'EST IMPORTANT")
    assert not hits(trigger, "OK")                               # too few letters
    assert not hits(trigger, "Hello everyone, this is Fine")
    assert not hits(trigger, "1234567890 !!!! ????")


# ------------------------------------------------------------------ scope, exemptions

def test_exemptions_and_scope() -> None:
    trigger = KeywordTrigger(keywords=["bad"])
    moderator = Author(user_id=2, role=Role.MODERATOR, moderator=True)
    assert not hits(trigger, "bad", author=moderator)
    assert hits(trigger, "bad", author=moderator, exempt_moderators=False)
    assert not hits(trigger, "bad", exempt_roles=[Role.MEMBER])
    vip = Author(user_id=3, role=Role.MEMBER, role_ids=frozenset({42}))
    assert not hits(trigger, "bad", author=vip, exempt_role_ids=[42])
    assert hits(trigger, "bad", author=vip, exempt_role_ids=[43])
    assert not hits(trigger, "bad", exempt_channel_ids=[CHANNEL])
    assert not hits(trigger, "bad", channel=500, parent=CHANNEL,   # a thread of it
                    exempt_channel_ids=[CHANNEL])
    assert hits(trigger, "bad", channel_id=CHANNEL)
    assert hits(trigger, "bad", channel=500, parent=CHANNEL, channel_id=CHANNEL)
    assert not hits(trigger, "bad", channel=11, channel_id=CHANNEL)
    assert not hits(trigger, "bad", enabled=False)


def test_verdict_actions() -> None:
    rules = RuleSet([
        compile_rule(make_rule(KeywordTrigger(keywords=["spam"]), ("flag", "alert"),
                               name="flagger")),
        compile_rule(make_rule(CapsTrigger(min_letters=3), ("block", "timeout"),
                               name="loud", timeout_s=60)),
    ])
    quiet = rules.evaluate("spam", MEMBER, CHANNEL, None, 0, SpamState())
    assert quiet.blocked_by is None
    assert [h.rule_name for h in quiet.wants(AutomodAction.FLAG)] == ["flagger"]
    loud = rules.evaluate("SPAM", MEMBER, CHANNEL, None, 0, SpamState())
    assert loud.blocked_by is not None and loud.blocked_by.rule_name == "loud"
    assert loud.blocked_by.timeout_s == 60
    assert len(loud.hits) == 2


def test_block_and_flag_exclude_each_other() -> None:
    with pytest.raises(RuleError, match="exclude"):
        compile_rule(make_rule(KeywordTrigger(keywords=["x"]), ("block", "flag")))


def test_empty_rule_set_costs_nothing() -> None:
    assert RuleSet([]).evaluate("anything", MEMBER, CHANNEL, None, 0, SpamState()) == Verdict()
