"""Valid samples of a JSON schema, and the same with one leaf made hostile: shared by
the REST and gateway hostile-input tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

HUGE_INTEGERS = (2**63, -(2**63) - 1, 2**64, 10**30)
"""Past bigint both ways, past unsigned 64 bits, and far past everything."""
BAD_TEXT = ("a\x00b", "\ud800", "x\udfffy")
"""NUL, and lone surrogates (JSON carries them as ``\\u`` escapes)."""


class Samples:
    """Samples of the schemas in ``components`` (an OpenAPI/JSON-schema ``$defs`` map)."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.schemas = components

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def sample(self, schema: dict[str, Any]) -> Any:
        """A small valid value of ``schema``."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s != {"type": "null"}]
            return self.sample(options[0])
        if "enum" in schema:
            return schema["enum"][0]
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if kind == "object":
            out = {}
            for name in schema.get("required", []):
                out[name] = self.sample(schema["properties"][name])
            return out
        if kind == "array":
            return [self.sample(schema["items"]) for _ in range(schema.get("minItems", 0))]
        if kind == "integer":
            return max(schema.get("minimum", 1), 1) if schema.get("maximum", 1) >= 1 else 0
        if kind == "number":
            return min(1, schema.get("maximum", 1))
        if kind == "boolean":
            return False
        if kind == "string":
            if "pattern" in schema:
                return "hz" + uuid.uuid4().hex[:8]
            return "x" * max(1, schema.get("minLength", 1))
        return None

    def mutations(self, schema: dict[str, Any], value: Any,
                  where: str = "") -> Iterator[tuple[str, Any]]:
        """``value`` with one leaf replaced by a hostile one, for every leaf the schema
        allows (optional fields too, array items, the chosen branch of a union)."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s != {"type": "null"}]
            yield from self.mutations(options[0], value, where)
            return
        kind = schema.get("type")
        if kind == "object" and "properties" in schema:
            base = value if isinstance(value, dict) else self.sample(schema)
            for name, prop in schema["properties"].items():
                current = base.get(name, self.sample(prop))
                for path, bad in self.mutations(prop, current, f"{where}.{name}"):
                    yield path, {**base, name: bad}
        elif kind == "array":
            item = self.sample(schema["items"])
            for path, bad in self.mutations(schema["items"], item, f"{where}[0]"):
                yield path, [bad]
        elif kind in ("integer", "number"):
            for n in HUGE_INTEGERS:
                yield where, n
        elif kind == "string" and "enum" not in schema and "const" not in schema:
            for text in BAD_TEXT:
                yield where, text
