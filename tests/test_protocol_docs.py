"""``docs/protocol.md`` is generated from the wire types and must stay that way."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec
import pytest

from protocol import docgen, docgen_introspect
from protocol.codes import RESUMABLE_CLOSE_CODES, CloseCode, ErrorCode
from protocol.frames import ClientFrame, Dispatch, Event, Ok, Result, ServerFrame
from protocol.limits import Limits

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
REGENERATE = (
    "docs/protocol.md is out of date; regenerate it with\n"
    "  .venv/bin/python -c \"from protocol.docgen import render_protocol_markdown as r; "
    "open('docs/protocol.md','w').write(r())\""
)


@pytest.fixture(scope="module")
def rendered() -> str:
    return docgen.render_protocol_markdown()


def test_docs_are_regenerated(rendered: str) -> None:
    assert DOC.read_text(encoding="utf-8") == rendered, REGENERATE


def test_rendering_is_deterministic(rendered: str) -> None:
    assert docgen.render_protocol_markdown() == rendered


def tags(union: object) -> list[str]:
    out = []
    for cls in typing.get_args(union):
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        out.append(tag)
    return out


@pytest.mark.parametrize("tag", tags(ClientFrame) + tags(ServerFrame))
def test_every_op_has_a_section(rendered: str, tag: str) -> None:
    assert f"### `{tag}`" in rendered
    assert f'"op": "{tag}"' in rendered  # in its example


@pytest.mark.parametrize("tag", tags(Event))
def test_every_event_has_a_section(rendered: str, tag: str) -> None:
    assert f"### `{tag}`" in rendered
    assert f'"t": "{tag}"' in rendered


@pytest.mark.parametrize("tag", tags(Result))
def test_every_result_has_a_section(rendered: str, tag: str) -> None:
    assert f"### Result `{tag}`" in rendered
    assert f'"type": "{tag}"' in rendered


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_error_code_is_documented(rendered: str, code: ErrorCode) -> None:
    row = re.search(rf"^\| `{code.value}` \| (.+) \|$", rendered, re.M)
    assert row and row.group(1).strip(), code


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_every_close_code_is_documented_with_resumability(rendered: str,
                                                         code: CloseCode) -> None:
    row = re.search(rf"^\| {int(code)} \| `{code.name}` \| (yes|no) \| (.+) \|$", rendered, re.M)
    assert row, code
    assert (row.group(1) == "yes") == (code in RESUMABLE_CLOSE_CODES)


@pytest.mark.parametrize("name", Limits.__struct_fields__)
def test_every_limit_is_documented_with_its_default(rendered: str, name: str) -> None:
    default = getattr(Limits(), name)
    row = re.search(rf"^\| `{name}` \| ([\d,]+) \| (.+) \|$", rendered, re.M)
    assert row, name
    assert int(row.group(1).replace(",", "")) == default


def test_every_field_has_a_description() -> None:
    missing = docgen.undocumented_fields()
    assert missing == [], (
        f"give these fields a docstring (or an entry in docgen.FIELD_NOTES): {missing}")


def test_every_internal_link_has_a_target(rendered: str) -> None:
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", rendered, re.M):
        anchors.add(docgen_introspect._slug(heading))
    links = set(re.findall(r"\]\(#([^)]+)\)", rendered))
    assert links - anchors == set()


@pytest.mark.parametrize(
    "cls",
    [*docgen.client_frame_types(), *docgen.server_frame_types(), *docgen.result_types(),
     *docgen.event_types()],
    ids=lambda c: c.__name__,
)
def test_examples_are_valid_frames(cls: type[msgspec.Struct]) -> None:
    example = docgen.example_of(cls)
    assert type(example) is cls
    if cls in docgen.client_frame_types():
        frame: object = example
        union: object = ClientFrame
    elif cls in docgen.server_frame_types():
        frame, union = example, ServerFrame
    elif cls in docgen.result_types():
        frame, union = Ok(id=1, data=typing.cast(Result, example)), ServerFrame
    else:
        frame, union = Dispatch(s=1, d=typing.cast(Event, example)), ServerFrame
    data = msgspec.json.encode(frame)
    # Decoding validates every constraint (ranges, lengths) that construction skips.
    assert msgspec.json.decode(data, type=union) == frame
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(frame), type=union) == frame


def test_docgen_is_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    """It must not write files (the CLI does); opening anything for writing fails here."""
    import builtins

    real_open = builtins.open

    def read_only_open(file: typing.Any, mode: str = "r", *args: typing.Any,
                       **kwargs: typing.Any) -> typing.Any:
        assert not any(c in mode for c in "wax+"), f"docgen opened {file!r} with {mode!r}"
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    assert docgen.render_protocol_markdown().startswith("# Hearth gateway protocol")


def test_every_request_names_its_result(rendered: str) -> None:
    """docgen's request -> result table must cover every request type."""
    from protocol.frames import REQUEST_TYPES

    missing = [cls.__name__ for cls in REQUEST_TYPES if cls not in docgen._request_results()]
    assert missing == [], f"add these to docgen._RESULT_OF: {missing}"
    assert rendered.count("Replied with `ok` carrying") == len(REQUEST_TYPES)
