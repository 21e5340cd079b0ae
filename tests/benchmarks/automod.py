"""Automod budget check: time to evaluate one message against a community's full rule set.

    .venv/bin/python -m tests.benchmarks.automod [--messages 20000] [--seed 1] [--engine re]

Builds 50 rules of every type (keyword lists of 70 entries with wildcards and allow
lists, regular expressions, link and invite filters, mention, rate, duplicate and caps
rules), then evaluates seeded, realistic chat messages (short lines, links, mentions,
accents, Cyrillic, CJK, emoji, a few long pastes) and a set of adversarial ones (4,000
characters built to make regular expressions and the link finder work hard), timing
each :meth:`rooms.moderation.automod.RuleSet.evaluate` call. The budget is 5 ms p99 per message.
``--engine re`` forces the standard library engine for regexes (what runs if google-re2
is missing) to show what RE2 buys. Not a test: numbers go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import time
from typing import Any

from protocol.automod import (
    MAX_LIST_CHARS_PER_COMMUNITY,
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
from rooms.moderation.automod import Author, RuleSet, SpamState, compile_rule, list_chars

WORDS = ("the a to and of is in that it you for on was with be this have are not but at "
         "what all can we they so do just like if about one out get up when there time "
         "game play stream tonight server channel message people think know good really "
         "new look make going want see thanks help need work right still even back").split()
FOREIGN = ["café très épicé", "привет как дела", "这是一个测试消息", "größer Straße",
           "naïve coöperation", "😀🎉🔥 lol", "ＦＵＬＬＷＩＤＴＨ text", "ça marche ✨"]
REGEXES = [r"free\s+nitro", r"(?:\d{1,3}\.){3}\d{1,3}", r"https?://\S+\.(?:exe|scr|bat)",
           r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}", r"\b(?:buy|cheap)\s+\w+\s+now\b",
           r"(?:ab|cd)+ef", r"\d{3}[-. ]\d{3}[-. ]\d{4}", r"steam\w*gift", r"[^\x00-\x7f]{40,}",
           r"(?:crypto|bitcoin|eth)\s+(?:giveaway|airdrop)"]


def heavy_keywords(rng: random.Random) -> list[Any]:
    """About the worst case the list limit allows: 9 rules x 90 random 9-letter keywords
    in every shape (no shared prefixes, so the matchers are as large as they get), with
    the regex rules' patterns filling the rest of the 10,000 characters."""
    triggers: list[Any] = []
    for _ in range(9):
        words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(9)) for _ in range(90)]
        shaped = [("*" if j % 2 else "") + w + ("*" if j % 3 == 0 else "")
                  for j, w in enumerate(words)]
        triggers.append(KeywordTrigger(keywords=shaped))
    return triggers


def build_rules(rng: random.Random, heavy: bool = False) -> list[AutomodRule]:
    triggers: list[Any] = []
    if heavy:
        triggers += heavy_keywords(rng)
    for i in range(0 if heavy else 10):
        words = [f"{rng.choice(WORDS)}{rng.choice(WORDS)}{i}{j}" for j in range(60)]
        words += ["*scam*", "spam*", "*bot", "badword", "slur", "nitro*", "*hack*", "cheat",
                  "crypto*", "giveaway"]
        triggers.append(KeywordTrigger(keywords=words, allow=["scampi", "hackathon",
                                                               "spammer-free"]))
    for _ in range(10):
        triggers.append(RegexTrigger(patterns=rng.sample(REGEXES, 5), allow=["example"]))
    for _ in range(5):
        triggers.append(LinkTrigger(allowed_domains=["example.com", "hearth.chat",
                                                     "youtube.com", "github.com"]))
    for _ in range(5):
        triggers.append(LinkSpamTrigger(max_links=4))
    for _ in range(5):
        triggers.append(MentionSpamTrigger(max_mentions=8))
    for _ in range(5):
        triggers.append(RateTrigger(max_messages=10, window_s=10))
    for _ in range(5):
        triggers.append(DuplicateTrigger(max_duplicates=3, window_s=30))
    for _ in range(5):
        triggers.append(CapsTrigger(max_percent=70, min_letters=12))
    if heavy:
        triggers = triggers[:50]
    return [AutomodRule(id=i + 1, community_id=1, name=f"rule {i}", trigger=t,
                        actions=[AutomodAction.FLAG]) for i, t in enumerate(triggers)]


def realistic(rng: random.Random) -> str:
    roll = rng.random()
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 30))]
    if roll < 0.10:
        host = rng.choice(["github.com", "x.io", "docs.example.com"])
        words.insert(rng.randrange(len(words)), f"https://{host}/{rng.randint(1, 999)}")
    elif roll < 0.18:
        words += [f"<@{rng.randint(1, 10**6)}>" for _ in range(rng.randint(1, 4))]
    elif roll < 0.30:
        words.append(rng.choice(FOREIGN))
    elif roll < 0.34:
        words = [w.upper() for w in words]
    elif roll < 0.37:
        words = [rng.choice(WORDS) for _ in range(rng.randint(300, 600))]  # a long paste
    elif roll < 0.40:
        words.append(rng.choice(["free nitro", "scam", "spammer-free", "discord.gg/abc"]))
    return " ".join(words)[:4000]


ADVERSARIAL = [
    "a" * 4000,
    "ab" * 2000,
    "a." * 2000,
    ("www." + "a" * 60 + ".") * 60,
    "https://" + "x" * 3990,
    " ".join(["<@1>"] * 800),
    "\u200b".join("spam" for _ in range(800)),
    "é" * 4000,
    ("steam" + "x" * 95) * 40,
    "1.2.3." * 666,
    ("scam" * 999),
    "ЅРАМ " * 800,
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run(rules: RuleSet, messages: list[str],
        rng: random.Random) -> tuple[list[float], list[float]]:
    """Per message: (wall-clock ms, this thread's CPU ms). On a shared machine the wall
    clock includes time the scheduler gave to other processes; the CPU time does not."""
    state = SpamState()
    authors = [Author(user_id=i, role=Role.MEMBER) for i in range(1, 200)]
    wall, cpu = [], []
    clock = 0.0
    for text in messages:
        clock += rng.expovariate(50)  # ~50 messages/s in the community
        author = rng.choice(authors)
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        rules.evaluate(text, author, 10, None, clock, state)
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
        wall.append((time.perf_counter_ns() - start) / 1e6)
    return wall, cpu


def report(name: str, timings: tuple[list[float], list[float]]) -> str:
    lines = []
    for kind, values in zip(("wall", "cpu"), timings, strict=True):
        lines.append(f"{name} {kind}: n={len(values)} p50={percentile(values, 50):.3f} ms "
                     f"p99={percentile(values, 99):.3f} ms max={max(values):.3f} ms "
                     f"mean={statistics.fmean(values):.3f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=["re2", "re"], default="re2")
    parser.add_argument("--heavy", action="store_true",
                        help="keyword lists at the community limit (random, long)")
    args = parser.parse_args()
    if args.engine == "re":
        automod_regex._re2 = None  # type: ignore[attr-defined]  # contrast: stdlib engine
    elif automod_regex.re2_module() is None:
        raise SystemExit("google-re2 is not installed")
    rng = random.Random(args.seed)
    print(f"seed={args.seed} engine={args.engine} "
          f"loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 vCPU, shared)")
    started = time.perf_counter()
    saved = build_rules(rng, heavy=args.heavy)
    chars = sum(list_chars(r.trigger) for r in saved)
    assert chars <= MAX_LIST_CHARS_PER_COMMUNITY, chars
    rules = RuleSet(compile_rule(r) for r in saved)
    print(f"{len(saved)} rules, {chars} list characters")
    print(f"compiled {len(rules)} rules in {(time.perf_counter() - started) * 1000:.0f} ms")
    messages = [realistic(rng) for _ in range(args.messages)]
    run(rules, messages[:500], rng)  # warm-up
    print(report("realistic", run(rules, messages, rng)))
    print(report("adversarial", run(rules, ADVERSARIAL * 20, rng)))
    letters = ["".join(rng.choice(string.ascii_lowercase + " ") for _ in range(4000))
               for _ in range(240)]
    print(report("random letters", run(rules, letters, rng)))
    print(f"loadavg after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
