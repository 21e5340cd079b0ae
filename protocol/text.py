"""The one check every string and integer of a request passes, whichever way it came.

msgspec decodes a frame or a REST body into its types and their ``Meta`` bounds; what
the types cannot say is checked here, for every value at any depth: text must be
storable in PostgreSQL ``text`` (no NUL, no lone surrogate, which UTF-8 cannot encode)
and at most :data:`MAX_TEXT_CHARS` code points, and an integer must fit a ``bigint``.
The gateway (``protocol/session.py``) and the REST decoder (``server/rest/decoding.py``)
both call :func:`value_problem`, so a value refused on one road is refused on the other.
"""

from __future__ import annotations

import msgspec

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
MAX_TEXT_CHARS = 32_768
"""Longest string accepted in any field that sets no lower limit of its own (the
largest field, an SDP offer, is ``limits.max_sdp_chars`` = 32,768)."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "must not contain NUL"
    if len(value) > MAX_TEXT_CHARS:
        return f"is longer than {MAX_TEXT_CHARS} characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain a lone surrogate"
    return None


def value_problem(value: object, where: str = "") -> str | None:
    """The first string or integer in ``value`` (Structs, lists, dicts, any depth) that
    :func:`text_problem` or the ``bigint`` range refuses, as ``"<where> <why>"``."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else f"{where or 'value'} {problem}"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        if BIGINT_MIN <= value <= BIGINT_MAX:
            return None
        return f"{where or 'value'} is out of range"
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            problem = value_problem(getattr(value, name), f"{where}.{name}" if where else name)
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            problem = value_problem(item, f"{where}[{i}]")
            if problem is not None:
                return problem
    elif isinstance(value, dict):
        for key, item in value.items():
            problem = (value_problem(key, f"{where} key")
                       or value_problem(item, f"{where}.{key}" if where else str(key)))
            if problem is not None:
                return problem
    return None
