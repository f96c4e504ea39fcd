"""A catalogue of JSON Schemas for chapter 5, each with instances that must and must not be accepted.

`SCHEMAS` is shared: the JSON Schema -> regex tests use it, and later tests of constrained decoding can
too. A case's `schema` is a dict, a boolean, or a pydantic model class (when pydantic is installed).
Valid and invalid instances are Python values; tests serialise them with `json.dumps` (default layout).
"""

from __future__ import annotations

import enum
from typing import Any, Literal, NamedTuple, Optional

try:
    from pydantic import BaseModel, Field
except ImportError:  # pydantic is optional: its cases are left out
    BaseModel = None


class SchemaCase(NamedTuple):
    id: str
    schema: Any
    valid: list[Any]
    invalid: list[Any]


HOUSES = ["Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin"]
BLOOD_STATUSES = ["Pure-blood", "Half-blood", "Muggle-born"]

CHARACTER_CARD = {
    "title": "Character card",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "house": {"enum": HOUSES},
        "blood_status": {"enum": BLOOD_STATUSES},
        "wand": {
            "type": "object",
            "properties": {
                "wood": {"type": "string"},
                "core": {"type": "string"},
                "length": {"type": "number"},
            },
            "required": ["wood", "core", "length"],
        },
        "alive": {"type": "boolean"},
        "patronus": {"type": "string"},
    },
    "required": ["name", "house", "blood_status", "wand", "alive", "patronus"],
}

HARRY = {
    "name": "Harry Potter",
    "house": "Gryffindor",
    "blood_status": "Half-blood",
    "wand": {"wood": "holly", "core": "phoenix feather", "length": 11},
    "alive": True,
    "patronus": "stag",
}
SEVERUS = {
    "name": "Severus Snape",
    "house": "Slytherin",
    "blood_status": "Half-blood",
    "wand": {"wood": "unknown", "core": "unknown", "length": 13.5},
    "alive": False,
    "patronus": "doe",
}


def _without(value: dict, key: str) -> dict:
    return {k: v for k, v in value.items() if k != key}


def _nested_list(depth: int) -> dict:
    """A linked list {"value": 0, "next": {...}} of `depth` nodes."""
    node: dict = {"value": depth - 1}
    for i in range(depth - 2, -1, -1):
        node = {"value": i, "next": node}
    return node


def _category(depth: int) -> dict:
    """A category with one subcategory chain `depth` levels deep below it."""
    node: dict = {"name": f"level {depth}"}
    for i in range(depth - 1, -1, -1):
        node = {"name": f"level {i}", "subcategories": [node]}
    return node


SCHEMAS: list[SchemaCase] = [
    SchemaCase(
        "character_card",
        CHARACTER_CARD,
        [HARRY, SEVERUS, {**HARRY, "name": 'Luna "Loony" Lovegood', "house": "Ravenclaw", "patronus": ""}],
        [
            _without(HARRY, "patronus"),
            {**HARRY, "house": "Durmstrang"},
            {**HARRY, "blood_status": "Squib"},
            {**HARRY, "alive": "yes"},
            {**HARRY, "wand": _without(HARRY["wand"], "length")},
            {"house": "Gryffindor", **_without(HARRY, "house")},  # members out of order
        ],
    ),
    SchemaCase(
        "string",
        {"type": "string"},
        ["", "hello", 'q"uote \\ back', "tab\t nl\n", "ünï ✓", "\x01"],
        [1, None],
    ),
    SchemaCase(
        "string_lengths",
        {"type": "string", "minLength": 2, "maxLength": 4},
        ["ab", "abcd", 'a"b', "é\n"],
        ["a", "abcde", 12],
    ),
    SchemaCase(
        "string_pattern",
        {"type": "string", "pattern": "^[A-Z][a-z]+( [A-Z][a-z]+)?$"},
        ["Hermione", "Ron Weasley"],
        ["hermione", "H", "Ron  Weasley"],
    ),
    SchemaCase("integer", {"type": "integer"}, [0, -7, 123456789012], [1.5, "1", -0.5]),
    SchemaCase(
        "integer_range",
        {"type": "integer", "minimum": -10, "maximum": 25},
        [-10, -1, 0, 7, 25],
        [-11, 26, 100],
    ),
    SchemaCase("integer_non_negative", {"type": "integer", "minimum": 0}, [0, 1, 99999], [-1, -100]),
    SchemaCase(
        "integer_exclusive",
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
        [1, 50, 99],
        [0, 100, -5],
    ),
    SchemaCase("integer_max_negative", {"type": "integer", "maximum": -5}, [-5, -1000], [-4, 0, 5]),
    SchemaCase(
        "integer_fractional_bounds", {"type": "integer", "minimum": 1.5, "maximum": 7.5}, [2, 7], [1, 8]
    ),
    SchemaCase("number", {"type": "number"}, [0, -1.5, 3.25e10, 1e-07, 42], ["1", True, None]),
    SchemaCase("boolean", {"type": "boolean"}, [True, False], [0, None, "true"]),
    SchemaCase("null", {"type": "null"}, [None], [0, "null", False]),
    SchemaCase("type_list", {"type": ["string", "null", "integer"]}, ["x", None, 3], [1.5, True, []]),
    SchemaCase(
        "enum_mixed",
        {"enum": [1, "two", None, True, {"a": [1, 2]}, [3, "x"], "a.b|c*(d)", 'q"uote\\', "é"]},
        [1, "two", None, True, {"a": [1, 2]}, [3, "x"], "a.b|c*(d)", 'q"uote\\', "é"],
        [2, "three", False, {"a": [1]}, "aXb|c*(d)"],
    ),
    SchemaCase(
        "enum_with_type",
        {"type": "string", "enum": ["red", "green", 3]},  # 3 is not a string: never written
        ["red", "green"],
        [3, "blue"],
    ),
    SchemaCase(
        "const_object",
        {"const": {"kind": "spell", "power": 9000, "tags": []}},
        [{"kind": "spell", "power": 9000, "tags": []}],
        [{"kind": "spell", "power": 9001, "tags": []}, {"kind": "spell"}],
    ),
    SchemaCase(
        "object_all_optional",
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}},
        },
        [{}, {"a": "x"}, {"b": 1}, {"c": False}, {"a": "x", "c": True}, {"a": "x", "b": 2, "c": True}],
        [{"a": 1}, {"b": 1, "a": "x"}, {"d": 1}],
    ),
    SchemaCase(
        "object_mixed_required",
        {
            "type": "object",
            "properties": {
                "a": {"type": "null"},
                "b": {"type": "integer"},
                "c": {"type": "string"},
                "d": {"type": "boolean"},
                "e": {"type": "number"},
            },
            "required": ["b", "d"],
        },
        [
            {"b": 1, "d": True},
            {"a": None, "b": 1, "d": True},
            {"a": None, "b": 1, "c": "", "d": False, "e": 2.5},
        ],
        [{"b": 1}, {"d": True}, {"a": None, "d": True}, {}],
    ),
    SchemaCase(
        "object_implied_type",
        {"properties": {"id": {"type": "integer"}, "label": {"type": "string"}}, "required": ["id"]},
        [{"id": 1}, {"id": 2, "label": "two"}],
        [{"label": "two"}, 3],
    ),
    SchemaCase(
        "object_free",
        {"type": "object"},
        [{}, {"x": 1, "y": [1, {"z": None}]}, {"a": {"b": {"c": "deep"}}}],
        [[], "x", {"a": {"b": {"c": {"d": {"e": 1}}}}}],  # values nest at most max_recursion_depth deep
    ),
    SchemaCase(
        "object_additional_schema",
        {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        [{}, {"a": 1, "b": 2}],
        [{"a": -1}, {"a": "x"}],
    ),
    SchemaCase("object_closed_empty", {"type": "object", "additionalProperties": False}, [{}], [{"a": 1}]),
    SchemaCase(
        "array_items",
        {"type": "array", "items": {"type": "integer"}},
        [[], [1], [1, 2, 3]],
        [["a"], [1.5], {}],
    ),
    SchemaCase(
        "array_bounds",
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        [["a"], ["a", "b"], ["a", "b", "c"]],
        [[], ["a", "b", "c", "d"]],
    ),
    SchemaCase(
        "array_exact",
        {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
        [[True, False]],
        [[True], [True, True, True]],
    ),
    SchemaCase("array_empty_only", {"type": "array", "maxItems": 0}, [[]], [[1]]),
    SchemaCase(
        "array_min_only",
        {"type": "array", "items": {"type": "null"}, "minItems": 2},
        [[None, None], [None] * 5],
        [[None], []],
    ),
    SchemaCase(
        "array_any_items", {"type": "array", "maxItems": 2}, [[], [1, "x"], [[{"a": None}]]], [[1, 2, 3]]
    ),
    SchemaCase(
        "prefix_items_closed",
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
        [[], ["a"], ["a", 1]],
        [["a", 1, 2], [1], [1, "a"]],
    ),
    SchemaCase(
        "prefix_items_open",
        {
            "type": "array",
            "prefixItems": [{"type": "boolean"}],
            "items": {"type": "null"},
            "minItems": 2,
            "maxItems": 3,
        },
        [[True, None], [False, None, None]],
        [[True], [None, None], [True, None, None, None]],
    ),
    SchemaCase("any_value", {}, [1, "x", None, [1, [2, {"a": None}]], {"a": {"b": {"c": 1}}}], [[[[[1]]]]]),
    SchemaCase("true_schema", True, [0.5, {"k": [True]}], [[[[["too deep"]]]]]),
    SchemaCase(
        "any_of",
        {
            "description": "a short string or a big integer",
            "anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 10}],
        },
        ["abc", "", 10, 12345],
        ["abcd", 9, None],
    ),
    SchemaCase(
        "one_of_tagged",
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "kind": {"const": "cat"},
                        "lives": {"type": "integer", "minimum": 0, "maximum": 9},
                    },
                    "required": ["kind", "lives"],
                },
                {
                    "type": "object",
                    "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}},
                    "required": ["kind", "good"],
                },
            ],
            "discriminator": {"propertyName": "kind"},
        },
        [{"kind": "cat", "lives": 9}, {"kind": "dog", "good": True}],
        [{"kind": "cat", "good": True}, {"kind": "cat", "lives": 10}, {"kind": "owl", "good": True}],
    ),
    SchemaCase(
        "all_of_single_ref",
        {
            "$defs": {
                "Point": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                    "required": ["x", "y"],
                }
            },
            "allOf": [{"$ref": "#/$defs/Point"}],
        },
        [{"x": 1, "y": -2}],
        [{"x": 1}, {"y": 2, "x": 1}],
    ),
    SchemaCase(
        "refs_escaped_and_draft7",
        {
            "$defs": {"a/b~c": {"type": "string", "enum": ["slash", "tilde"]}},
            "definitions": {"count": {"type": "integer", "minimum": 1, "maximum": 3}},
            "type": "object",
            "properties": {"which": {"$ref": "#/$defs/a~1b~0c"}, "count": {"$ref": "#/definitions/count"}},
            "required": ["which", "count"],
        },
        [{"which": "slash", "count": 1}, {"which": "tilde", "count": 3}],
        [{"which": "dot", "count": 1}, {"which": "slash", "count": 4}],
    ),
    SchemaCase(
        "recursive_linked_list",
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/Node"}},
                    "required": ["value"],
                }
            },
            "$ref": "#/$defs/Node",
        },
        [_nested_list(1), _nested_list(4)],
        [_nested_list(5), {"next": {"value": 1}}],  # 5 nodes: one more than max_recursion_depth allows
    ),
    SchemaCase(
        "recursive_root",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["name"],
        },
        [{"name": "root"}, {"name": "a", "children": [{"name": "b", "children": []}, {"name": "c"}]}],
        [{"children": []}, {"name": "a", "children": [1]}],
    ),
    SchemaCase(
        "recursive_expression",
        {
            "$defs": {
                "Expr": {
                    "anyOf": [
                        {"type": "integer"},
                        {
                            "type": "object",
                            "properties": {
                                "op": {"enum": ["+", "*"]},
                                "args": {
                                    "type": "array",
                                    "items": {"$ref": "#/$defs/Expr"},
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                            },
                            "required": ["op", "args"],
                        },
                    ]
                }
            },
            "$ref": "#/$defs/Expr",
        },
        [1, {"op": "+", "args": [1, {"op": "*", "args": [2, 3]}]}],
        [{"op": "-", "args": [1, 2]}, {"op": "+", "args": [1]}],
    ),
    SchemaCase(
        "formats",
        {
            "type": "object",
            "properties": {
                name: {"type": "string", "format": name}
                for name in ("date", "time", "date-time", "uuid", "email", "uri", "ipv4")
            },
            "required": ["date", "time", "date-time", "uuid", "email", "uri", "ipv4"],
        },
        [
            {
                "date": "2024-02-29",
                "time": "23:59:59.5+01:00",
                "date-time": "1998-05-02T12:00:00Z",
                "uuid": "123e4567-e89b-12d3-a456-426614174000",
                "email": "hermione.granger@hogwarts.ac.uk",
                "uri": "https://hogwarts.ac.uk/library/restricted?section=J#p394",
                "ipv4": "192.168.0.255",
            }
        ],
        [],
    ),
    SchemaCase(
        "format_date",
        {"type": "string", "format": "date"},
        ["2024-02-29", "2000-02-29", "1999-12-31", "0001-01-01", "2023-04-30"],
        ["2023-02-29", "1900-02-29", "2023-13-01", "0000-01-01", "2023-04-31", "2023-1-01"],
    ),
    SchemaCase(
        "format_time_uuid_ipv4",
        {
            "type": "array",
            "prefixItems": [
                {"type": "string", "format": "time"},
                {"type": "string", "format": "uuid"},
                {"type": "string", "format": "ipv4"},
            ],
            "items": False,
            "minItems": 3,
        },
        [["00:00:00Z", "00000000-0000-0000-0000-000000000000", "0.0.0.0"]],
        [
            ["24:00:00Z", "00000000-0000-0000-0000-000000000000", "0.0.0.0"],
            ["12:00:00", "00000000-0000-0000-0000-000000000000", "0.0.0.0"],  # an offset is required
            ["00:00:00Z", "0000000-00000-0000-0000-000000000000", "0.0.0.0"],
            ["00:00:00Z", "00000000-0000-0000-0000-000000000000", "256.0.0.1"],
            ["00:00:00Z", "00000000-0000-0000-0000-000000000000", "01.0.0.1"],
        ],
    ),
]

if BaseModel is not None:

    class House(str, enum.Enum):
        gryffindor = "Gryffindor"
        hufflepuff = "Hufflepuff"
        ravenclaw = "Ravenclaw"
        slytherin = "Slytherin"

    class Wand(BaseModel):
        wood: str
        core: str
        length: float

    class Character(BaseModel):
        name: str = Field(min_length=1, max_length=40)
        house: House
        blood_status: Literal["Pure-blood", "Half-blood", "Muggle-born"]
        age: int = Field(ge=11, le=150)
        wand: Wand
        friends: list[str] = Field(default_factory=list, max_length=4)
        patronus: Optional[str] = None  # noqa: UP045 (Optional on purpose: the classic spelling)
        spare_wand: Optional[Wand] = None  # noqa: UP045

    class Category(BaseModel):
        name: str
        subcategories: list[Category] = []

    class Inventory(BaseModel):
        counts: dict[str, int]
        position: tuple[int, int]
        scale: tuple[float, ...] = ()

    _BASE_CHARACTER = {
        "name": "Hermione Granger",
        "house": "Gryffindor",
        "blood_status": "Muggle-born",
        "age": 17,
        "wand": {"wood": "vine", "core": "dragon heartstring", "length": 10.75},
    }
    SCHEMAS += [
        SchemaCase(
            "pydantic_character",
            Character,
            [
                _BASE_CHARACTER,
                {
                    **_BASE_CHARACTER,
                    "friends": ["Harry", "Ron"],
                    "patronus": "otter",
                    "spare_wand": {"wood": "x", "core": "y", "length": 9},
                },
                {**_BASE_CHARACTER, "patronus": None},
            ],
            [
                {**_BASE_CHARACTER, "age": 10},
                {**_BASE_CHARACTER, "age": 151},
                {**_BASE_CHARACTER, "name": ""},
                {**_BASE_CHARACTER, "house": "Durmstrang"},
                {**_BASE_CHARACTER, "friends": ["a", "b", "c", "d", "e"]},
                _without(_BASE_CHARACTER, "wand"),
            ],
        ),
        SchemaCase(
            "pydantic_recursive",
            Category,
            [{"name": "books"}, {"name": "books", "subcategories": []}, _category(3)],
            [_category(4), {"subcategories": []}],
        ),
        SchemaCase(
            "pydantic_containers",
            Inventory,
            [
                {"counts": {}, "position": [0, -1]},
                {"counts": {"potions": 3}, "position": [1, 2], "scale": [0.5]},
            ],
            [{"counts": {"potions": 1.5}, "position": [1, 2]}, {"counts": {}, "position": [1]}],
        ),
    ]
