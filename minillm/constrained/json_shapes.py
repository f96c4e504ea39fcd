"""Chapter 5: what the instances of a JSON Schema can look like, enough to prove `oneOf` branches disjoint.

`oneOf` accepts a document that is valid under exactly one of its branches. json_schema_to_regex writes
an alternation of the branches, so every document one branch's regex writes must be invalid under every
other branch: otherwise constrained decoding could emit a document that the schema rejects. A Shape
over-approximates a schema in four ways:

  valid     the JSON types of every instance valid under it. Only `type`, `const` and `enum` narrow them:
            `{"properties": ...}` also accepts any string or number, which simply has no properties.
  emitted   the JSON types of what the translator writes for it: `type`, or the one its keywords imply.
  values    every valid instance is one of these (`const` / `enum`), or None.
  fixed     properties whose values `const` / `enum` list: an object holding one takes one of these.
  tags      the required ones among them: every valid object holds it (a discriminator).

disjoint(a, b) is True only when it can prove that neither writes a document the other accepts: the
types differ, the listed values differ, or both fix a property (a discriminator) to values that never
meet and at least one of them requires it. It
errs towards False (json_schema_to_regex then refuses the `oneOf`), never towards True.

Checked by: pytest -m ch5 -k one_of (tests/test_ch5_json_schema.py, against the jsonschema package).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
ALL_TYPES = frozenset(TYPES)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_type_matches(value: Any, name: str) -> bool:
    """Whether a Python value decoded from JSON is an instance of the JSON Schema type `name`."""
    if name == "integer":
        return is_number(value) and float(value).is_integer()
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "number": is_number,
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return checks[name](value)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema's const and enum see it: 1 == 1.0, but true != 1; objects by members."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Shape:
    valid: frozenset[str]  # every valid instance has one of these JSON types
    emitted: frozenset[str]  # every document the translator writes has one of these types
    values: tuple | None = None  # every valid instance is one of these (const / enum); None: not listed
    fixed: dict[str, tuple] = field(default_factory=dict)  # property -> its values, when present
    tags: frozenset[str] = frozenset()  # the fixed properties that are required


ANY = Shape(ALL_TYPES, ALL_TYPES)
NOTHING = Shape(frozenset(), frozenset())  # the schema false


def shape_of(schema: Any, resolve: Callable[[str], Any], types: Callable[[dict], list[str] | None]) -> Shape:
    """The Shape of `schema`. resolve(ref) -> the schema a local `$ref` points to; types(schema) -> the
    types the translator writes for a schema without $ref, combinators, const or enum (None: any)."""
    return _shape(schema, resolve, types, ())


def _shape(schema: Any, resolve, types, refs: tuple[str, ...]) -> Shape:
    if schema is False:
        return NOTHING
    if not isinstance(schema, dict):
        return ANY  # true, or something the translator will refuse
    if "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or ref in refs:  # a cycle: assume anything
            return ANY
        return _shape(resolve(ref), resolve, types, (*refs, ref))
    branches = schema.get("anyOf", schema.get("oneOf"))
    if branches is None and isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
        branches = schema["allOf"]
    if isinstance(branches, list) and branches:
        return _union([_shape(b, resolve, types, refs) for b in branches])
    declared = schema.get("type")
    declared = declared if isinstance(declared, list) else [declared] if declared is not None else TYPES
    valid = frozenset(t for t in declared if isinstance(t, str)) & ALL_TYPES
    if "enum" in schema or "const" in schema:
        values = list(schema["enum"]) if isinstance(schema.get("enum"), list) else None
        if "const" in schema:
            const = schema["const"]
            values = [v for v in values if json_equal(v, const)] if values is not None else [const]
        if values is None:
            return ANY
        values = [v for v in values if any(json_type_matches(v, t) for t in valid)]
        found = frozenset(t for v in values for t in TYPES if json_type_matches(v, t))
        return Shape(found, found, tuple(values))
    emitted = valid & frozenset(types(schema) or TYPES)
    properties, required = schema.get("properties"), schema.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list):
        return Shape(valid, emitted)
    fixed = {}
    for name, subschema in properties.items():
        values = _shape(subschema, resolve, types, refs).values
        if values is not None:
            fixed[name] = values
    return Shape(valid, emitted, None, fixed, frozenset(fixed) & frozenset(required))


def _union(shapes: list[Shape]) -> Shape:
    listed = all(s.values is not None for s in shapes)
    return Shape(
        frozenset().union(*(s.valid for s in shapes)),
        frozenset().union(*(s.emitted for s in shapes)),
        tuple(v for s in shapes for v in s.values) if listed else None,
    )


def disjoint(a: Shape, b: Shape) -> bool:
    """True when provably no document written for one is valid under the other."""
    return _excludes(a, b) and _excludes(b, a)


def _overlap(types_a: frozenset[str], types_b: frozenset[str]) -> bool:
    def numbers_as_one(types):  # every integer is a number, and "1" is written by a number's regex
        return {"number" if t == "integer" else t for t in types}

    return bool(numbers_as_one(types_a) & numbers_as_one(types_b))


def _excludes(a: Shape, b: Shape) -> bool:
    """Every document written for a is invalid under b."""
    if not _overlap(a.emitted, b.valid):
        return True
    if a.values is not None:  # a writes only these
        return not any(_may_hold(b, v, b.valid) for v in a.values)
    if b.values is not None:  # b accepts only these
        return not any(_may_hold(a, v, a.emitted) for v in b.values)
    if a.emitted == {"object"}:
        # A property both fix to values that never meet, and one of them requires: a's objects hold it
        # with a's values (or lack it, where only b requires it), which b does not accept.
        return any(
            name in a.fixed
            and name in b.fixed
            and not any(json_equal(x, y) for x in a.fixed[name] for y in b.fixed[name])
            for name in a.tags | b.tags
        )
    return False


def _may_hold(shape: Shape, value: Any, types: frozenset[str]) -> bool:
    """False only when `value` is provably not among the shape's instances of these types (its valid
    ones, or the ones the translator writes)."""
    if not any(json_type_matches(value, t) for t in types):
        return False
    if shape.values is not None:
        return any(json_equal(value, w) for w in shape.values)
    if isinstance(value, dict):
        if any(name not in value for name in shape.tags):
            return False
        for name, allowed in shape.fixed.items():
            if name in value and not any(json_equal(value[name], w) for w in allowed):
                return False
    return True
