"""Regular expressions in automod rules: refused when they could backtrack
catastrophically, matched in linear time when google-re2 is installed.

Split from ``rooms/moderation/automod.py`` (which compiles and evaluates rules) because the safety
check is its own concern: a static analysis over the tree Python's own regex parser
builds. Pure: no I/O. See :func:`check_pattern` and docs/moderation.md.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from typing import Any

from protocol.automod import MAX_PATTERN_CHARS

try:  # google-re2: linear-time matching for moderators' regular expressions
    import re2 as _re2  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - the dependency is declared; see check_pattern
    _re2 = None
    logging.getLogger(__name__).warning(
        "google-re2 is missing: automod regexes run on `re`, which the static check keeps "
        "from exponential backtracking but not from polynomial slowness on long messages")

# The regex parser of the standard library (sre). It is not a public module, but it is
# the parser ``re`` itself uses, so the checked tree is exactly what would run.
_sre_parser: Any = importlib.import_module("re._parser")
_sre_compiler: Any = importlib.import_module("re._compiler")
_sre_constants: Any = importlib.import_module("re._constants")


class RuleError(ValueError):
    """A rule cannot be saved; the message says why (shown to the moderator)."""


def re2_module() -> Any:
    """The RE2 module, or None when it is not installed (read at call time, so a
    benchmark can switch engines)."""
    return _re2


# -------------------------------------------------------------------- regex safety

_MAX_AMBIGUITY = 10_000
"""Most ways a bounded nested repeat may split its input, e.g. ``(\\d{1,3}\\.){3}``
has 3**3 = 27; ``(a?){20}`` has 2**20 and is refused."""
_SAMPLE = "".join(chr(c) for c in range(0x20, 0x250)) + "\t\n\r\u00a0\u2003αβγωабвжя中文字😀"


def _unsafe(pattern: str, why: str) -> RuleError:
    return RuleError(f"pattern {pattern[:40]!r} refused: {why}")


def check_pattern(pattern: str) -> None:
    """Refuse a regular expression that could backtrack catastrophically (or that the
    linear-time engine cannot run). Raises :class:`RuleError` saying why.

    A static check over the tree ``re`` itself parses, independent of the engine, so
    every node accepts and refuses the same patterns:

    * only literals, character classes, ``.``, anchors, groups, alternation and
      repeats are allowed; backreferences, lookarounds, conditionals and atomic
      groups are refused (they are what makes matching non-regular, and RE2 lacks them);
    * a repeat of something that can match the empty string (``(a*)*``) is refused;
    * a variable repeat inside another repeat is refused when either is unbounded
      (``(a+)+``, ``(.*a){20}``) or the bounded nest has more than 10,000 ways to
      split the input (``(a?){20}``);
    * an alternation under a repeat whose branches can start with the same character
      or both match nothing (``(a|a)*``, ``(\\wa|\\db)+``) is refused (``re`` first
      factors common prefixes and folds single characters into classes, so
      ``(a|ab)*`` becomes ``(ab?)*`` and ``(\\w|x)+`` becomes ``[\\wx]+``: both fine);
    * a pattern that matches the empty string would hit every message: refused.
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        raise _unsafe(pattern, f"longer than {MAX_PATTERN_CHARS} characters")
    if "\x00" in pattern:
        raise _unsafe(pattern, "contains NUL")
    analysed, has_properties, ambiguous = _without_properties(pattern)
    if ambiguous:
        # [[:alpha:]], [a--b], [a&&b]...: set syntax that means different things in the
        # two dialects (and makes ``re`` warn), so refused rather than guessed.
        raise _unsafe(pattern, "not a valid regular expression (nested set or set "
                      "operation inside [...]; use \\pL or list the characters)")
    if has_properties and _re2 is None:
        raise _unsafe(pattern, "Unicode classes (\\pL...) need the RE2 engine, not installed")
    try:
        parsed = _sre_parser.parse(analysed, re.IGNORECASE)
        _sre_compiler.compile(parsed, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError) as exc:
        raise _unsafe(pattern, f"not a valid regular expression ({exc})") from None
    state = parsed.state
    _walk(pattern, state, parsed, [])
    if parsed.getwidth()[0] == 0:
        raise _unsafe(pattern, "it can match the empty string, so it would hit every message")
    if _re2 is not None:
        try:
            _re2.compile(pattern, re2_options())
        except Exception as exc:  # re2.error; its type is not exported consistently
            raise _unsafe(pattern, f"the linear-time engine cannot run it ({exc})") from None


def _without_properties(pattern: str) -> tuple[str, bool, bool]:
    """``pattern`` with RE2's Unicode classes (``\\pL``, ``\\p{Greek}``, ``\\PN``...),
    which ``re`` cannot parse, replaced by "any character" for the analysis: one
    character wide like the class, and overlapping everything, so the overlap checks
    err on the side of refusing. Returns (pattern for the analysis, whether any, whether
    a class holds ``[`` or a set operator: ``--``, ``&&``, ``~~``, ``||``)."""
    out: list[str] = []
    found = ambiguous = False
    in_class = False
    class_start = -1
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] in "pP":
                end = i + 3
                if pattern[i + 2:i + 3] == "{":
                    close = pattern.find("}", i + 2)
                    end = close + 1 if close > 0 else len(pattern)
                out.append("\\s\\S" if in_class else "[\\s\\S]")
                found = True
                i = end
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class and (c == "[" or pattern[i:i + 2] in ("--", "&&", "~~", "||")):
            ambiguous = True
        if c == "[" and not in_class:
            in_class, class_start = True, i
        elif c == "]" and in_class and i > class_start + 1 and not (
                i == class_start + 2 and pattern[class_start + 1] == "^"):
            in_class = False
        out.append(c)
        i += 1
    return "".join(out), found, ambiguous


def _walk(pattern: str, state: Any, items: Any, enclosing: list[float]) -> None:
    c = _sre_constants
    repeated = any(hi > 1 for hi in enclosing)
    for op, av in items:
        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN, c.AT):
            continue
        if op is c.SUBPATTERN:
            _walk(pattern, state, av[3], enclosing)
        elif op is c.BRANCH:
            branches = av[1]
            for branch in branches:
                _walk(pattern, state, branch, enclosing)
            if repeated:
                _check_branches(pattern, state, branches)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, body = av
            hi_f = math.inf if hi == c.MAXREPEAT else float(hi)
            if body.getwidth()[0] == 0 and hi_f > 1:
                raise _unsafe(pattern, "it repeats something that can match nothing")
            if enclosing and hi_f > lo and repeated:
                if math.isinf(hi_f) or any(math.isinf(h) for h in enclosing):
                    raise _unsafe(pattern, "nested unbounded quantifiers (like (a+)+ or "
                                  "(.*a){20}) can backtrack catastrophically; remove "
                                  "the inner or the outer quantifier")
                outer = math.prod(enclosing)
                if outer * math.log10(hi_f - lo + 1) > math.log10(_MAX_AMBIGUITY):
                    raise _unsafe(pattern, "a variable quantifier inside a repeated group "
                                  "has too many ways to match (like (a?){20})")
            _walk(pattern, state, body, [*enclosing, hi_f])
        elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise _unsafe(pattern, "backreferences are not allowed")
        elif op in (c.ASSERT, c.ASSERT_NOT):
            raise _unsafe(pattern, "lookahead and lookbehind are not allowed")
        else:
            raise _unsafe(pattern, f"{str(op).lower()} is not allowed")


def _first(state: Any, items: Any) -> tuple[list[Any], bool]:
    """(atoms a match can start with, whether it can be empty)."""
    c = _sre_constants
    atoms: list[Any] = []
    for op, av in items:
        if op is c.AT:
            continue
        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
            atoms.append((op, av))
            return atoms, False
        if op is c.SUBPATTERN:
            inner, nullable = _first(state, av[3])
        elif op is c.BRANCH:
            inner, nullable = [], False
            for branch in av[1]:
                got, empty = _first(state, branch)
                inner += got
                nullable = nullable or empty
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            inner, nullable = _first(state, av[2])
            nullable = nullable or av[0] == 0
        else:
            return atoms, False
        atoms += inner
        if not nullable:
            return atoms, False
    return atoms, True


def _starts(state: Any, atoms: list[Any]) -> set[str]:
    """Which sample characters the atoms accept (exact ``re`` semantics, ignore-case)."""
    found: set[str] = set()
    for atom in atoms:
        matcher = _sre_compiler.compile(_sre_parser.SubPattern(state, [atom]), re.IGNORECASE)
        if atom[0] is _sre_constants.LITERAL:
            found.add(chr(atom[1]).casefold())
        found.update(ch for ch in _SAMPLE if matcher.match(ch))
    return found


def _check_branches(pattern: str, state: Any, branches: Any) -> None:
    seen: set[str] = set()
    nullable_seen = False
    for branch in branches:
        atoms, nullable = _first(state, branch)
        starts = _starts(state, atoms)
        if (nullable and nullable_seen) or starts & seen:
            raise _unsafe(pattern, "alternatives under a quantifier overlap (like (a|a)* or "
                          "(\\wa|\\db)+) and can backtrack catastrophically; make them start "
                          "differently, e.g. (ab?)*")
        seen |= starts
        nullable_seen = nullable_seen or nullable


def re2_options() -> Any:
    options = _re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    return options


class Matcher:
    """A checked pattern, on RE2 when available (linear time), else on ``re``."""

    __slots__ = ("_regex",)

    def __init__(self, pattern: str) -> None:
        self._regex: Any = (_re2.compile(pattern, re2_options()) if _re2 is not None
                            else re.compile(pattern, re.IGNORECASE))

    def search(self, text: str, pos: int) -> tuple[int, int] | None:
        m = self._regex.search(text, pos)
        if m is None:
            return None
        span: tuple[int, int] = m.span()
        return span
