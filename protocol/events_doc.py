"""Generates ``docs/events.md`` from :mod:`protocol.domain_events` (a test keeps it current).

Regenerate with::

    .venv/bin/python -c "from protocol.events_doc import render_events_markdown as r; \\
        open('docs/events.md','w').write(r())"
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi

from protocol import domain_events

REGENERATE = ("  .venv/bin/python -c \"from protocol.events_doc import render_events_markdown "
              "as r; open('docs/events.md','w').write(r())\"")


def event_types() -> tuple[type[msgspec.Struct], ...]:
    return typing.get_args(domain_events.DomainEvent)


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string right after a field) of ``cls``."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    previous: str | None = None
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            previous = node.target.id
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
              and isinstance(node.value.value, str) and previous is not None):
            docs[previous] = _md(node.value.value)
            previous = None
        else:
            previous = None
    return docs


def _md(text: str) -> str:
    """A docstring paragraph as one Markdown line (reST roles and double backticks
    become plain code spans)."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", " ".join(text.split()))
    return text.replace("``", "`")


def _type_name(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.EnumType):
        return " \\| ".join(f'`"{m.value}"`' for m in t.cls)
    if isinstance(t, mi.ListType):
        return f"list of {_type_name(t.item_type)}"
    if isinstance(t, mi.UnionType):
        return " or ".join(_type_name(x) for x in t.types)
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.Metadata):
        return _type_name(t.type)
    return type(t).__name__.removesuffix("Type").lower()


def _example(cls: type[msgspec.Struct]) -> str:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    sample: dict[str, Any] = {}
    for f in info.fields:
        t = f.type
        while isinstance(t, (mi.Metadata, mi.UnionType)):
            t = t.type if isinstance(t, mi.Metadata) else next(
                x for x in t.types if not isinstance(x, mi.NoneType))
        if isinstance(t, mi.IntType):
            sample[f.encode_name] = 1_700_000_000_000 if f.name == "at" else 42
        elif isinstance(t, mi.StrType):
            sample[f.encode_name] = "👍" if f.name == "emoji" else "text"
        elif isinstance(t, mi.EnumType):
            sample[f.encode_name] = next(iter(t.cls)).value
        elif isinstance(t, mi.ListType):
            sample[f.encode_name] = [7]
    event = msgspec.convert(sample | {"type": info.tag}, domain_events.DomainEvent)
    return msgspec.json.format(msgspec.json.encode(event), indent=2).decode()


def render_events_markdown() -> str:
    out: list[str] = ["# Hearth domain events", "",
                      "_Generated from `protocol/domain_events.py` by "
                      "`protocol/events_doc.py`; do not edit by hand._", ""]
    for paragraph in (inspect.getdoc(domain_events) or "").split("\n\n"):
        out += [_md(paragraph), ""]
    out += [
        "## Consuming them", "",
        "A sidecar declares a subscriber (`sidecars/api.py: Subscriber`) with a name; the "
        "host runs it (`persistence/outbox.py: Consumer`). Each round locks the "
        "subscriber's position, hands every event after it to the handler *with the "
        "transaction's connection*, advances the position and commits: the handler's "
        "writes and the position commit together, so a crash re-delivers the batch and "
        "nothing is handled twice. Work after the commit (publishing to members) is at "
        "least once. An event whose handler keeps failing is set aside in "
        "`outbox_dead_letters` (with its error) after a few attempts, so one poison "
        "event cannot stop a subscriber. Events arrive in commit order per writing transaction; "
        "`event_id` (`\"<xid>:<id>\"`) is stable across redeliveries. Wake-ups come by "
        "PostgreSQL `LISTEN hearth_outbox`, with a poll as fallback. Events older than "
        "the retention (`outbox_retention_days`, 7 by default) that every subscriber has "
        "consumed are deleted by a periodic task; a subscriber no longer run still holds "
        "them, until its row in `outbox_subscribers` is deleted.", "",
        "## Events", "",
        "| `type` | when |", "|---|---|",
    ]
    for cls in event_types():
        tag = cls.__struct_config__.tag
        summary = _md((inspect.getdoc(cls) or "").split("\n\n")[0])
        out.append(f"| [`{tag}`](#{tag}) | {summary} |")
    out.append("")
    for cls in event_types():
        tag = cls.__struct_config__.tag
        out += [f"### `{tag}`", "", _md(inspect.getdoc(cls) or ""), ""]
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        docs = _field_docs(cls)
        out += ["| field | type | notes |", "|---|---|---|",
                f'| `type` | `"{tag}"` | the tag |']
        for f in info.fields:
            required = "required" if f.required else "optional"
            note = "; ".join(x for x in (required, docs.get(f.name, "")) if x)
            out.append(f"| `{f.encode_name}` | {_type_name(f.type)} | {note} |")
        out += ["", "```json", _example(cls), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"
