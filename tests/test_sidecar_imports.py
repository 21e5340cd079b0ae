"""Sidecars see the core only through ``sidecars/api.py``: no sidecar module imports
``rooms``, ``server`` or another sidecar (``persistence`` only through the api)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sidecars"
FORBIDDEN = ("rooms", "server", "persistence")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


SIDECAR_MODULES = sorted(p for p in ROOT.rglob("*.py")
                         if p.parent != ROOT and "migrations" not in p.parts)


@pytest.mark.parametrize("path", SIDECAR_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_sidecar_imports_only_protocol_the_api_and_itself(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path}: imports {name}"
        if top == "sidecars":
            assert name == "sidecars.api" or name.split(".")[1] == own, \
                f"{path}: imports another sidecar ({name})"


def test_there_is_at_least_one_sidecar() -> None:
    assert SIDECAR_MODULES
