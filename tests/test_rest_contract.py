"""The REST contract: one error table, an OpenAPI 3.1 document that covers every route,
and ``docs/rest.md`` rendered from it. Socket-free: the app is built, never started."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from protocol.codes import ErrorCode
from server.app import build_app
from server.auth import AuthError
from server.config import load_config
from server.rest.docs import current_document, render_rest_markdown
from server.rest.errors import HTTP_STATUS
from server.rest.openapi import API_PREFIX, rest_api

DOC = Path(__file__).resolve().parent.parent / "docs" / "rest.md"
REGENERATE = ("docs/rest.md is out of date; regenerate it with\n"
              "  .venv/bin/python -m server.rest.docs > docs/rest.md")


@pytest.fixture(scope="module")
def app() -> web.Application:
    config = load_config(overrides={"data_dir": tempfile.mkdtemp(prefix="hearth-contract-"),
                                    "secret": "contract-test-secret-0123456789"}, environ={})
    return build_app(config)


@pytest.fixture(scope="module")
def document(app: web.Application) -> dict[str, Any]:
    return rest_api(app).document()


def test_every_error_code_has_one_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= status < 600 for status in HTTP_STATUS.values())


def test_auth_errors_agree_with_the_table() -> None:
    """server/auth.py's refusals carry a status too; it must be the table's."""
    def subclasses(cls: type[AuthError]) -> list[type[AuthError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in subclasses(sub))]

    for cls in subclasses(AuthError):
        assert HTTP_STATUS[ErrorCode(cls.code)] == cls.status, cls


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)  # raises on the first violation


def _route_keys(app: web.Application) -> set[tuple[str, str]]:
    keys = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(API_PREFIX + "/") and route.method != "HEAD":
            keys.add((route.method, path))
    return keys


def test_every_route_is_in_the_document_and_nothing_else(app: web.Application,
                                                         document: dict[str, Any]) -> None:
    documented = {(method.upper(), path) for path, methods in document["paths"].items()
                  for method in methods}
    routes = _route_keys(app)
    assert routes, "no REST routes found"
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations without a route"


def test_every_path_parameter_and_error_is_described(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), (method, path)
            statuses = set(op["responses"])
            assert {"400", "404"} <= statuses, (method, path)
            assert "401" in statuses or not op["security"], (method, path)
            assert len([s for s in statuses if s.startswith("2")]) == 1, (method, path)


def test_error_replies_list_exactly_the_codes_of_their_status(
        document: dict[str, Any]) -> None:
    for name, response in document["components"]["responses"].items():
        status = int(name.removeprefix("Error"))
        schema = response["content"]["application/json"]["schema"]
        listed = schema["properties"]["error"]["properties"]["code"]["enum"]
        assert sorted(listed) == sorted(c.value for c, s in HTTP_STATUS.items() if s == status)


def test_docs_are_regenerated(document: dict[str, Any]) -> None:
    assert document == current_document()
    assert DOC.read_text(encoding="utf-8") == render_rest_markdown(document), REGENERATE


def test_every_operation_is_in_the_docs(document: dict[str, Any]) -> None:
    text = DOC.read_text(encoding="utf-8")
    for path in document["paths"]:
        assert f"`{path.removeprefix(API_PREFIX)}`" in text
