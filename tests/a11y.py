"""An automated accessibility audit for the browser tests: axe-core (vendored, pinned,
see tests/vendor/axe-core/README.md) run inside a Playwright page.

Any browser test can use it through the ``axe`` fixture (registered in conftest.py)::

    async def test_x(browser, hearth_server, axe):
        ...
        await axe(page, "the chat page")   # fails on serious or critical violations

Only ``serious`` and ``critical`` findings fail: ``minor``/``moderate`` ones are returned
by :func:`axe_violations` for a test that wants to look at them, but are not a gate.
The audit reads the page as it is at that moment, so call it in the states worth
checking (a dialog open, a list filled), not only after load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

AXE_PATH = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
BLOCKING = ("serious", "critical")

_RUN = """async (selector) => {
  const r = await axe.run(selector ? document.querySelector(selector) : document,
                          { resultTypes: ["violations"] });
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")) }));
}"""

Audit = Callable[..., Awaitable[list[dict[str, Any]]]]


@cache
def axe_source() -> str:
    """The vendored axe-core, refused if it is not the pinned build."""
    data = AXE_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert digest == AXE_SHA256, f"{AXE_PATH} is not the pinned axe-core build ({digest})"
    return data.decode()


async def axe_violations(page: Any, *, within: str | None = None,
                         impacts: tuple[str, ...] = BLOCKING) -> list[dict[str, Any]]:
    """Run axe-core on ``page`` (or the element ``within`` selects) and return the
    violations of the given impacts: ``{id, impact, help, nodes}`` each."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(content=axe_source())
    found: list[dict[str, Any]] = await page.evaluate(_RUN, within)
    return [v for v in found if v["impact"] in impacts]


async def assert_accessible(page: Any, what: str, *, within: str | None = None
                            ) -> list[dict[str, Any]]:
    """Fail with a readable list when axe-core finds serious or critical violations."""
    violations = await axe_violations(page, within=within)
    assert not violations, f"axe-core on {what}:\n" + "\n".join(
        f"  [{v['impact']}] {v['id']}: {v['help']} at {v['nodes']}" for v in violations)
    return violations


@pytest.fixture
def axe() -> Audit:
    """``await axe(page, "what it is")``: the audit as a fixture, for any browser test."""
    return assert_accessible
