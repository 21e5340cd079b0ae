"""Part of :mod:`protocol.docgen`: what the document is made of. The frame, result and
event types of the unions, the docstrings the source keeps (attribute docstrings are
read from the modules' own source, because Python discards them), and short Markdown
names for msgspec types."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import msgspec
import msgspec.inspect as mi

from protocol import (
    base,
    frames,
    models,
    moderation,
    roles,
)
from protocol.frames import (
    ClientFrame,
    Event,
    Result,
    ServerFrame,
)

StructT = type[msgspec.Struct]

# ----------------------------------------------------------------------------- the types


def _members(union: Any) -> tuple[StructT, ...]:
    return tuple(typing.get_args(union))


def client_frame_types() -> tuple[StructT, ...]:
    """Every client frame type, in union order."""
    return _members(ClientFrame)


def server_frame_types() -> tuple[StructT, ...]:
    """Every server frame type, in union order."""
    return _members(ServerFrame)


def event_types() -> tuple[StructT, ...]:
    """Every event type (``dispatch.d``), in union order."""
    return _members(Event)


def result_types() -> tuple[StructT, ...]:
    """Every result type (``ok.data``), in union order."""
    return _members(Result)


def _tag(cls: StructT) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls
    return tag


def _tag_field(cls: StructT) -> str:
    field = cls.__struct_config__.tag_field
    assert isinstance(field, str), cls
    return field


# ------------------------------------------------------------------------- docstrings


def _attribute_docs(module: ModuleType) -> dict[str, dict[str, str]]:
    """``{class name: {attribute: docstring}}`` from the module's own source.

    An attribute docstring is a string literal statement right after an assignment in a
    class body (the convention Sphinx reads); Python discards them at runtime.
    """
    tree = ast.parse(inspect.getsource(module))
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        for stmt, following in zip(node.body, node.body[1:], strict=False):
            target: ast.expr | None = None
            if isinstance(stmt, ast.AnnAssign):
                target = stmt.target
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
            if (isinstance(target, ast.Name) and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[target.id] = inspect.cleandoc(following.value.value)
        found[node.name] = docs
    return found


def _own_doc(obj: type) -> str:
    """The docstring written on ``obj`` itself (not inherited)."""
    doc = obj.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


_ROLE = re.compile(r":(?:class|meth|func|data|attr|mod):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _inline(text: str) -> str:
    """reStructuredText inline markup to Markdown."""
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return _LITERAL.sub(r"`\1`", text)


def _prose(doc: str) -> str:
    """A docstring as Markdown paragraphs (``::`` literal blocks become fenced code)."""
    blocks: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(" ".join(para))
            para.clear()

    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        i += 1
        if not stripped:
            flush()
        elif stripped.endswith("::"):
            head = stripped[:-2].rstrip()
            if head:
                para.append(_inline(head) + ":")
            flush()
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            blocks.append("```text\n" + "\n".join(_dedent(block)) + "\n```")
        else:
            para.append(_inline(stripped))
    flush()
    return "\n\n".join(blocks)


def _dedent(block: list[str]) -> list[str]:
    indents = [len(x) - len(x.lstrip()) for x in block if x.strip()]
    cut = min(indents, default=0)
    return [x[cut:] for x in block]


def _cell(text: str) -> str:
    """One table cell: a single line, pipes escaped."""
    return " ".join(_inline(text).split()).replace("|", "\\|")


# ------------------------------------------------------------------------- type names

_INT53 = 2**53 - 1


def _num(n: int | float) -> str:
    if n == _INT53:
        return "2^53−1"
    return f"{n:,}" if isinstance(n, int) and abs(n) >= 10_000 else str(n)


def _scalar_aliases() -> list[tuple[str, mi.Type, str]]:
    """``(name, type info, description)`` of every described ``Annotated`` alias."""
    aliases: list[tuple[str, mi.Type, str]] = []
    for module in (models, base, frames, moderation, roles):
        for name, value in vars(module).items():
            if typing.get_origin(value) is not typing.Annotated:
                continue
            info = mi.type_info(value)
            if isinstance(info, mi.Metadata) and info.extra_json_schema:
                description = info.extra_json_schema.get("description")
                if isinstance(description, str) and all(a[0] != name for a in aliases):
                    aliases.append((name, info, description))
    return aliases


class _Types:
    """Renders msgspec type info as short Markdown, linking named types to their section."""

    def __init__(self, anchors: dict[type, str]) -> None:
        self.anchors = anchors
        self.aliases = _scalar_aliases()

    def link(self, cls: type, text: str | None = None) -> str:
        label = text or cls.__name__
        anchor = self.anchors.get(cls)
        return f"[{label}](#{anchor})" if anchor else label

    def name(self, t: mi.Type) -> str:
        if isinstance(t, mi.Metadata):
            for alias, info, _ in self.aliases:
                if info == t:
                    return f"[{alias}](#scalar-types)"
            return self.name(t.type)
        if isinstance(t, mi.IntType):
            return "integer" + self._bounds(t.ge, t.gt, t.le, t.lt)
        if isinstance(t, mi.StrType):
            if t.min_length and t.max_length is not None:
                return f"string ({t.min_length}–{_num(t.max_length)} chars)"
            if t.max_length is not None:
                return f"string (≤ {_num(t.max_length)} chars)"
            if t.min_length:
                return f"string (≥ {t.min_length} chars)"
            return "string"
        if isinstance(t, mi.BoolType):
            return "boolean"
        if isinstance(t, mi.FloatType):
            return "number"
        if isinstance(t, mi.NoneType):
            return "null"
        if isinstance(t, mi.EnumType):
            return self.link(t.cls)
        if isinstance(t, mi.ListType):
            return f"array of {self.name(t.item_type)}"
        if isinstance(t, mi.DictType):
            return f"object of {self.name(t.key_type)} to {self.name(t.value_type)}"
        if isinstance(t, mi.StructType):
            return self.link(t.cls)
        if isinstance(t, mi.UnionType):
            members = {x.cls for x in t.types if isinstance(x, mi.StructType)}
            if members and members == set(result_types()):
                return "[Result](#results)"
            if members and members == set(event_types()):
                return "[Event](#events)"
            return " or ".join(self.name(x) for x in t.types)
        if isinstance(t, mi.LiteralType):
            return " or ".join(f"`{msgspec.json.encode(v).decode()}`" for v in t.values)
        if isinstance(t, mi.AnyType):
            return "any"
        return type(t).__name__

    @staticmethod
    def _bounds(ge: int | None, gt: int | None, le: int | None, lt: int | None) -> str:
        low = f"{_num(ge)}" if ge is not None else f"{_num(gt + 1)}" if gt is not None else ""
        high = f"{_num(le)}" if le is not None else f"{_num(lt - 1)}" if lt is not None else ""
        if low and high:
            return f" ({low} to {high})"
        if low:
            return f" (≥ {low})"
        if high:
            return f" (≤ {high})"
        return ""


# ------------------------------------------------------------------------- the document


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _walk(t: mi.Type) -> Iterable[mi.Type]:
    yield t
    if isinstance(t, mi.Metadata):
        yield from _walk(t.type)
    elif isinstance(t, mi.UnionType):
        for x in t.types:
            yield from _walk(x)
    elif isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        yield from _walk(t.item_type)


def _own_doc_module(module: ModuleType) -> str:
    return inspect.cleandoc(module.__doc__ or "")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text
