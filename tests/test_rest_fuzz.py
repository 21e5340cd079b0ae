"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis).

``hearth serve`` runs as its own process on a real PostgreSQL; the document is the one
it serves. For every operation schemathesis generates valid requests (and, fewer,
invalid ones), sent with the bearer token of a community owner; half of the valid ones
have their ids (in the path and at the top of the body) swapped for ids that exist
(the owner's community, channel, role, rule, live session, a member), so the handlers
run past the lookup. Every reply must be a
documented status with a body matching its documented schema, never a 500, and the
server's log must hold no traceback. Examples are bounded per operation (the run takes
about a minute on two cores); ``HEARTH_FUZZ_EXAMPLES`` raises the bound.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import RunningServer, start_server_process, stop_server_process

EXAMPLES = int(os.environ.get("HEARTH_FUZZ_EXAMPLES", "10"))
"""Valid requests generated per operation; invalid ones: half as many."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    """``hearth serve`` with its log in ``tmp_path/server.log``."""
    node = start_server_process(database_url, HEARTH_LOADTEST_PROVISIONING="false",
                                HEARTH_DATA_DIR=str(tmp_path), HEARTH_LOG_LEVEL="INFO")
    try:
        yield node
    finally:
        stop_server_process(node)


def _post(http: requests.Session, url: str, token: str | None, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = http.post(url, json=body, headers=headers, timeout=10)
    assert reply.status_code in (200, 201), (url, reply.status_code, reply.text)
    return reply.json()


def _seed(base: str) -> tuple[str, str, dict[str, int]]:
    """A community owner's token, a service key of the community with every scope, and
    ids of things that exist, for the path params."""
    api = base + "/api/v1"
    with requests.Session() as http:
        def register() -> dict[str, Any]:
            return dict(_post(http, api + "/auth/register", None, {
                "username": f"fz{uuid.uuid4().hex[:10]}", "password": "correct horse battery"}))

        owner, member = register(), register()
        token = owner["access_token"]
        created = _post(http, api + "/communities", token, {"name": "fuzz"})
        community_id = created["community"]["id"]
        code = _post(http, f"{api}/communities/{community_id}/invites", token, {})["code"]
        _post(http, f"{api}/invites/{code}/join", member["access_token"], {})
        role = _post(http, f"{api}/communities/{community_id}/roles", token,
                     {"name": "helper", "permissions": 0})["role"]
        rule = _post(http, f"{api}/communities/{community_id}/automod/rules", token, {
            "name": "k", "actions": ["flag"],
            "trigger": {"type": "keyword", "keywords": ["zzfuzz"]}})["rule"]
        live = _post(http, f"{api}/communities/{community_id}/live-sessions", token, {
            "title": "fuzz", "starts_at": 4_102_444_800_000})["session"]
        key = _post(http, f"{api}/communities/{community_id}/service-keys", token, {
            "name": "fuzz", "scopes": ["tiers:read", "tiers:write", "members:read",
                                       "courses:read", "courses:write", "events:publish"]})
    ids = {"community_id": community_id, "channel_id": created["channels"][0]["id"],
           "user_id": member["user"]["id"], "target_id": role["id"], "role_id": role["id"],
           "rule_id": rule["id"], "session_id": live["id"]}
    return token, key["secret"], ids


def _negated(case: Any) -> set[str]:
    """Where a negative case breaks the schema (``path``, ``query``, ``body``...)."""
    return {str(getattr(location, "value", location))
            for location, info in case.meta.components.items()
            if info.mode is GenerationMode.NEGATIVE}


def _fuzz(operation: Any, mode: GenerationMode, examples: int, base: str,
          http: requests.Session, headers: dict[str, str], ids: dict[str, int]) -> None:
    """``examples`` generated requests to ``operation``; raises on the first failure.

    Valid cases get existing ids half of the time. Invalid ones keep theirs, and must be
    refused (``negative_data_rejection``) unless all they break is a header: the token
    this test adds repairs the missing ``Authorization`` schemathesis means to send."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
    def run(case: Any, real: bool) -> None:
        checks = list(CHECKS)
        if mode is GenerationMode.NEGATIVE:
            if _negated(case) - {"header"}:
                checks.append(negative_data_rejection)
        elif real:
            for name in list(case.path_parameters or {}):
                if name in ids:
                    case.path_parameters[name] = ids[name]
            if isinstance(case.body, dict):
                for name in list(case.body):
                    if name in ids:
                        case.body[name] = ids[name]
        case.call_and_validate(base_url=base, session=http, headers=headers, checks=checks)

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to break: no parameters, no body


@pytest.mark.slow
def test_fuzz_every_operation(server: RunningServer, tmp_path: Path) -> None:
    document = requests.get(server.url + "/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    token, service_key, ids = _seed(server.url)
    failures: list[str] = []
    operations = 0
    with requests.Session() as http:
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                failures.append(f"an operation schemathesis cannot read: {result.err()}")
                continue
            operation = result.ok()
            operations += 1
            security = document["paths"][operation.path][operation.method.lower()]["security"]
            takes_user = not security or any("bearer" in c for c in security)
            headers = {"Authorization": f"Bearer {token if takes_user else service_key}"}
            for mode, examples in ((GenerationMode.POSITIVE, EXAMPLES),
                                   (GenerationMode.NEGATIVE, max(1, EXAMPLES // 2))):
                try:
                    _fuzz(operation, mode, examples, server.url, http, headers, ids)
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert operations >= 60
    assert not failures, "\n\n".join(failures)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
