"""Chapter 5: JSON Schema -> regex. For every schema in tests/json_schemas.py, strings sampled from the
regex are JSON documents valid under the schema; handwritten valid instances match and invalid ones do
not. Integer ranges are exact; optional members get their separators right for every subset; each
unsupported keyword or bad input raises JSONSchemaError naming the keyword and its path.

Where our own regex engine (minillm.constrained.regex) imports, its DFA must agree with Python's re."""

from __future__ import annotations

import functools
import itertools
import json
import re
from datetime import datetime
from re import _parser as sre_parse  # the parser behind re: to list the constructs a regex uses
from urllib.parse import urlsplit

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from json_schemas import CHARACTER_CARD, HARRY, SCHEMAS, SchemaCase

from minillm.constrained.json_schema import JSONSchemaError, integer_range_regex, json_schema_to_regex

pytestmark = pytest.mark.ch5

try:
    from minillm.constrained.regex import compile_regex
except ImportError:  # the engine lands separately; until then only Python's re checks the regexes
    compile_regex = None

CASES = {case.id: case for case in SCHEMAS}
SAMPLES_PER_SCHEMA = 30
# Sampled text is UTF-8 encodable (no lone surrogates): it is what a byte-level decoder can produce.
TEXT_ALPHABET = st.characters(codec="utf-8")


# --- helpers ----------------------------------------------------------------------------------------


@functools.cache
def regex_for(case_id: str, whitespace: str | None = None) -> str:
    return json_schema_to_regex(CASES[case_id].schema, whitespace=whitespace)


@functools.cache
def dfa_for(regex: str):
    return compile_regex(regex)


def matches(regex: str, text: str) -> bool:
    """re.fullmatch, cross-checked against our engine's DFA when it is available."""
    found = re.fullmatch(regex, text) is not None
    if compile_regex is not None:
        assert dfa_for(regex).accepts(text) == found, f"DFA and re disagree on {text!r}"
    return found


def _check_time(text: str) -> bool:
    return datetime.fromisoformat("1970-01-01T" + text).tzinfo is not None


def _check_date_time(text: str) -> bool:
    return "T" in text and datetime.fromisoformat(text).tzinfo is not None


def _check_uri(text: str) -> bool:
    parts = urlsplit(text)
    return bool(parts.scheme and parts.netloc) and not any(c.isspace() for c in text)


# jsonschema checks date, email, ipv4 and uuid natively; time, date-time and uri need packages we do not
# install (and FormatChecker()'s own "time" is draft 3's, without offsets), so those three use Python.
FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
FORMAT_CHECKER.checkers.update(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
FORMAT_CHECKER.checks("time", raises=ValueError)(_check_time)
FORMAT_CHECKER.checks("date-time", raises=ValueError)(_check_date_time)
FORMAT_CHECKER.checks("uri")(_check_uri)


def assert_valid(case: SchemaCase, text: str) -> None:
    value = json.loads(text)
    if isinstance(case.schema, type):  # a pydantic model: its JSON Schema, and the model itself
        jsonschema.validate(value, case.schema.model_json_schema(), format_checker=FORMAT_CHECKER)
        case.schema.model_validate_json(text)
    else:
        jsonschema.validate(value, case.schema, format_checker=FORMAT_CHECKER)


def sample_matches(regex: str, check, max_examples: int = SAMPLES_PER_SCHEMA) -> None:
    """Run check(text) on strings drawn (deterministically) from the full matches of `regex`."""

    @settings(
        max_examples=max_examples,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: it can crawl on regexes this large
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(st.from_regex(regex, fullmatch=True, alphabet=TEXT_ALPHABET))
    def run(text: str) -> None:
        check(text)

    run()


# --- every schema of the catalogue --------------------------------------------------------------------


def test_catalogue_is_large_and_ids_are_unique():
    assert len(SCHEMAS) >= 30
    assert len(CASES) == len(SCHEMAS)


@pytest.mark.parametrize("case", SCHEMAS, ids=lambda c: c.id)
def test_sampled_matches_are_valid(case):
    regex = regex_for(case.id)

    def check(text: str) -> None:
        assert_valid(case, text)
        if compile_regex is not None:
            assert dfa_for(regex).accepts(text), text

    sample_matches(regex, check)


@pytest.mark.parametrize("case", SCHEMAS, ids=lambda c: c.id)
def test_known_instances(case):
    regex = regex_for(case.id)
    for value in case.valid:
        text = json.dumps(value)
        assert_valid(case, text)  # the catalogue itself is right
        assert matches(regex, text), text
    for value in case.invalid:
        assert not matches(regex, json.dumps(value)), json.dumps(value)


@pytest.mark.parametrize("case", SCHEMAS, ids=lambda c: c.id)
def test_flexible_whitespace_accepts_indented_json(case):
    regex = regex_for(case.id, r"[ \n]*")
    for value in case.valid:
        for text in (json.dumps(value, indent=2), json.dumps(value, separators=(",", ":"))):
            assert matches(regex, text), text
    for value in case.invalid:
        assert not matches(regex, json.dumps(value, indent=2))


@pytest.mark.parametrize("case_id", ["character_card", "enum_mixed", "recursive_root", "pydantic_containers"])
def test_flexible_whitespace_samples_are_valid(case_id):
    case = CASES[case_id]
    sample_matches(regex_for(case_id, r"[ ]?"), lambda text: assert_valid(case, text), max_examples=20)


# --- layout -------------------------------------------------------------------------------------------


def test_default_layout_is_json_dumps():
    regex = json_schema_to_regex(CHARACTER_CARD)
    assert regex.startswith(r'\{"name": "')  # forced: a compressed FSM can jump over it
    assert matches(regex, json.dumps(HARRY))
    assert not matches(regex, json.dumps(HARRY, separators=(",", ":")))
    assert not matches(regex, json.dumps(HARRY, indent=2))
    flexible = json_schema_to_regex(CHARACTER_CARD, whitespace=r"[ ]?")
    assert matches(flexible, json.dumps(HARRY, separators=(",", ":")))
    assert matches(flexible, json.dumps(HARRY).replace("{", "{ ").replace("}", " }"))
    assert not matches(flexible, json.dumps(HARRY, indent=2))  # no newlines in [ ]?


def test_schema_as_json_string_and_pydantic_model():
    assert json_schema_to_regex(json.dumps(CHARACTER_CARD)) == json_schema_to_regex(CHARACTER_CARD)
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        x: int
        y: int

    assert json_schema_to_regex(Point) == json_schema_to_regex(Point.model_json_schema())
    assert matches(json_schema_to_regex(Point), '{"x": 1, "y": -2}')


ALLOWED_OPCODES = {
    "LITERAL",
    "NOT_LITERAL",
    "RANGE",
    "NEGATE",
    "IN",
    "ANY",
    "MAX_REPEAT",
    "BRANCH",
    "SUBPATTERN",
}


def opcodes(parsed):
    """Every opcode in a parsed Python regex: no CATEGORY (\\d \\w \\s), AT (anchors), ASSERT, GROUPREF..."""
    for op, arg in parsed:
        yield str(op)
        if str(op) == "IN":
            yield from (str(item_op) for item_op, _ in arg)
        elif str(op) == "BRANCH":
            for branch in arg[1]:
                yield from opcodes(branch)
        elif str(op) == "SUBPATTERN":
            assert arg[1] == arg[2] == 0, "inline flags"
            yield from opcodes(arg[3])
        elif str(op) == "MAX_REPEAT":
            yield from opcodes(arg[2])


@pytest.mark.parametrize("whitespace", [None, r"[ \t\n]*"])
def test_regex_stays_in_the_engine_dialect(whitespace):
    for case in SCHEMAS:
        used = set(opcodes(sre_parse.parse(regex_for(case.id, whitespace))))
        assert used <= ALLOWED_OPCODES, (case.id, used - ALLOWED_OPCODES)


# --- objects ------------------------------------------------------------------------------------------


def test_object_every_subset_of_optional_members():
    names = "abcde"
    properties = {n: {"type": "integer"} for n in names}
    for required in itertools.product([False, True], repeat=len(names)):
        required_names = [n for n, r in zip(names, required) if r]
        regex = json_schema_to_regex({"type": "object", "properties": properties, "required": required_names})
        for present in itertools.product([False, True], repeat=len(names)):
            value = {n: i for i, (n, p) in enumerate(zip(names, present)) if p}
            expected = all(p for p, r in zip(present, required) if r)
            assert (re.fullmatch(regex, json.dumps(value)) is not None) == expected, (required_names, value)
            if len(value) >= 2:  # members out of order never match
                assert re.fullmatch(regex, json.dumps(dict(reversed(value.items())))) is None


def test_object_regex_size_is_quadratic():
    def size(n: int) -> int:
        schema = {"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(n)}}
        return len(json_schema_to_regex(schema))

    assert size(40) < 4.5 * size(20)  # O(n^2), not 2^n
    regex = json_schema_to_regex(
        {"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(40)}, "required": ["p20"]}
    )
    assert len(regex) < 40 * 40  # with a required member: O(n)


def test_unwritable_optional_property_is_dropped():
    schema = {"type": "object", "properties": {"never": False, "maybe": {"type": "null"}}}
    regex = json_schema_to_regex(schema)
    assert matches(regex, "{}") and matches(regex, '{"maybe": null}')
    assert not matches(regex, '{"never": null}')


# --- integers -----------------------------------------------------------------------------------------

BOUNDS = [None, -1000, -101, -100, -99, -37, -10, -9, -1, 0, 1, 9, 10, 37, 99, 100, 101, 999, 1000, 12345]


def test_integer_ranges_exhaustive_on_a_grid():
    for lo, hi in itertools.product(BOUNDS, BOUNDS):
        if lo is not None and hi is not None and lo > hi:
            continue
        pattern = re.compile(integer_range_regex(lo, hi))
        for n in range(-1100, 1100):
            expected = (lo is None or lo <= n) and (hi is None or n <= hi)
            assert (pattern.fullmatch(str(n)) is not None) == expected, (lo, hi, n)


bound = st.one_of(st.none(), st.integers(-(10**9), 10**9))


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    lo=bound,
    hi=bound,
    offset=st.integers(-30, 30),
    anchor=st.sampled_from(["lo", "hi", "free"]),
    free=st.integers(-(10**10), 10**10),
)
def test_integer_range_hypothesis(lo, hi, offset, anchor, free):
    assume(lo is None or hi is None or lo <= hi)
    n = {"lo": (lo or 0) + offset, "hi": (hi or 0) + offset, "free": free}[
        anchor
    ]  # near a bound, or anywhere
    expected = (lo is None or lo <= n) and (hi is None or n <= hi)
    regex = integer_range_regex(lo, hi)
    assert (re.fullmatch(regex, str(n)) is not None) == expected
    assert re.fullmatch(regex, "-0") is None and re.fullmatch(regex, "0" + str(abs(n))) is None


def test_integer_range_never_accepts_non_canonical_forms():
    regex = integer_range_regex(-50, 50)
    for text in ("-0", "00", "007", "+5", "5.0", ""):
        assert re.fullmatch(regex, text) is None, text


def test_integer_schema_bounds():
    cases = [
        ({"minimum": 3}, 3, 2),
        ({"exclusiveMinimum": 3}, 4, 3),
        ({"maximum": -3}, -3, -2),
        ({"exclusiveMaximum": -3}, -4, -3),
        ({"exclusiveMinimum": 2.5, "maximum": 3}, 3, 2),
        ({"minimum": 0, "exclusiveMinimum": 5}, 6, 5),  # the stricter bound wins
    ]
    for bounds, inside, outside in cases:
        regex = json_schema_to_regex({"type": "integer", **bounds})
        assert matches(regex, str(inside)) and not matches(regex, str(outside)), bounds
    assert json_schema_to_regex({"type": "integer", "minimum": 0}) == "(?:0|[1-9][0-9]*)"  # no leading "-"


# --- recursion ----------------------------------------------------------------------------------------

LINKED_LIST = CASES["recursive_linked_list"].schema


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_recursion_depth(depth):
    regex = json_schema_to_regex(LINKED_LIST, max_recursion_depth=depth)
    for nodes in range(1, depth + 4):
        node = {"value": 0}
        for _ in range(nodes - 1):
            node = {"value": 0, "next": node}
        assert matches(regex, json.dumps(node)) == (nodes <= depth + 1), nodes


def test_recursive_anyof_branch_is_dropped_at_the_limit():
    regex = json_schema_to_regex(CASES["recursive_expression"].schema, max_recursion_depth=1)
    assert matches(regex, '{"op": "+", "args": [1, 2]}')
    assert not matches(regex, '{"op": "+", "args": [1, {"op": "*", "args": [2, 3]}]}')


def test_required_recursion_is_too_deep():
    schema = {
        "$defs": {
            "N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}, "required": ["next"]}
        },
        "$ref": "#/$defs/N",
    }
    with pytest.raises(JSONSchemaError, match=r"recursion too deep.*'#/\$defs/N'.*max_recursion_depth=3"):
        json_schema_to_regex(schema)


# --- oneOf: translated only when no branch can write a document another branch accepts ---------------

_CAT = {
    "type": "object",
    "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["kind", "lives"],
}
_DOG = {
    "type": "object",
    "properties": {"kind": {"enum": ["dog", "puppy"]}, "name": {"type": "string", "maxLength": 6}},
    "required": ["kind"],
}
ONE_OF_DISJOINT = {
    "types": {"oneOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}, {"type": "null"}]},
    "values": {"oneOf": [{"enum": ["a", "b", 1]}, {"enum": ["c", 2.5, None]}, {"const": True}]},
    "values_and_types": {"oneOf": [{"enum": ["a", "b"]}, {"type": "integer", "minimum": 0, "maximum": 99}]},
    "integer_and_fractions": {"oneOf": [{"type": "integer"}, {"enum": [1.5, -0.25]}]},
    "discriminator": {"oneOf": [_CAT, _DOG]},
    "discriminator_optional": {  # a dog may leave out "kind", but never says "cat"
        "oneOf": [
            _CAT,
            {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}},
        ]
    },
    "discriminator_by_ref": {
        "$defs": {"Cat": _CAT, "Dog": _DOG},
        "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
    },
    "discriminator_implied_objects": {  # no "type": a number is valid under both, but neither writes one
        "oneOf": [
            {"properties": {"t": {"const": 1}, "x": {"type": "boolean"}}, "required": ["t"]},
            {"properties": {"t": {"const": 2}, "y": {"type": "null"}}, "required": ["t"]},
        ]
    },
    "false_branch": {"oneOf": [False, {"type": "boolean"}]},
    "nested": {
        "oneOf": [
            {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
            {"type": "array", "items": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, "maxItems": 3},
        ]
    },
}
ONE_OF_OVERLAPPING = [  # (schema, an instance valid under two branches: anyOf accepts it, oneOf does not)
    ({"oneOf": [{}, {"type": "integer"}]}, 123),
    ({"oneOf": [True, True, True]}, "anything"),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 7),
    ({"oneOf": [{"const": 1}, {"const": 1.0}]}, 1),
    ({"oneOf": [{"enum": ["a", "bc"]}, {"type": "string", "maxLength": 1}]}, "a"),
    ({"oneOf": [{"properties": {"a": {"type": "string"}}}, {"type": "string"}]}, "s"),  # not an object
    (  # the second branch does not constrain "kind"
        {"oneOf": [_CAT, {"type": "object", "properties": {"lives": {"type": "integer"}}}]},
        {"kind": "cat", "lives": 1},
    ),
    ({"oneOf": [{"type": "string"}, {"anyOf": [{"type": "null"}, {"type": "string"}]}]}, "s"),
    ({"properties": {"p": {"oneOf": [{"type": "integer"}, {"type": "integer", "minimum": 0}]}}}, {"p": 3}),
]


@pytest.mark.parametrize("name", ONE_OF_DISJOINT)
def test_one_of_disjoint_branches_write_only_valid_documents(name):
    """Every document the regex (and our DFA) accepts is valid under the oneOf: exactly one branch."""
    schema = ONE_OF_DISJOINT[name]
    regex = json_schema_to_regex(schema)
    validator = jsonschema.Draft202012Validator(schema)

    def check(text: str) -> None:
        assert validator.is_valid(json.loads(text)), text
        if compile_regex is not None:
            assert dfa_for(regex).accepts(text), text

    sample_matches(regex, check, max_examples=60)


def test_one_of_disjoint_branches_each_write_their_documents():
    regex = json_schema_to_regex(ONE_OF_DISJOINT["discriminator"])
    for value in ({"kind": "cat", "lives": 9}, {"kind": "puppy"}, {"kind": "dog", "name": "Rex"}):
        assert matches(regex, json.dumps(value)), value
    for value in ({"kind": "cat"}, {"kind": "owl"}, {"kind": "dog", "lives": 1}):
        assert not matches(regex, json.dumps(value)), value


@pytest.mark.parametrize("schema, witness", ONE_OF_OVERLAPPING)
def test_one_of_overlapping_branches_are_refused(schema, witness):
    as_any_of = json.loads(json.dumps(schema).replace('"oneOf"', '"anyOf"'))
    assert jsonschema.Draft202012Validator(as_any_of).is_valid(witness)  # the alternation would write it...
    assert not jsonschema.Draft202012Validator(schema).is_valid(witness)  # ...and oneOf rejects it
    with pytest.raises(
        JSONSchemaError, match=r"'oneOf' at #.*/oneOf: branches \d and \d are not provably disjoint"
    ):
        json_schema_to_regex(schema)
    json_schema_to_regex(as_any_of)  # anyOf of the same branches is fine


# --- errors -------------------------------------------------------------------------------------------

ERRORS = [
    (
        {"type": "object", "properties": {"tags": {"type": "object", "patternProperties": {}}}},
        "'patternProperties' at #/properties/tags",
    ),
    ({"not": {"type": "string"}}, "'not' at #"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "'if' at #"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "'dependentRequired' at #"),
    ({"type": "array", "contains": {"type": "integer"}}, "'contains' at #"),
    ({"type": "integer", "multipleOf": 2}, "'multipleOf' at #"),
    ({"type": "object", "minProperties": 1}, "'minProperties' at #"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "'uniqueItems' at #"),
    ({"type": "array", "items": [{"type": "string"}]}, "'items' as an array at #"),
    ({"type": "number", "minimum": 0}, "'minimum' on a number at #/minimum"),
    ({"type": "string", "format": "hostname"}, "format 'hostname' at #/format"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "'allOf' with 2 subschemas at #/allOf"),
    ({"anyOf": []}, "'anyOf' must be a non-empty array at #/anyOf"),
    ({"type": "string", "anyOf": [{"maxLength": 3}]}, "keyword 'type' beside 'anyOf' at #"),
    ({"const": "a", "maxLength": 3}, "keyword 'maxLength' beside 'const' at #"),
    ({"enum": []}, "'enum' must be a non-empty array at #/enum"),
    ({"type": "string", "enum": [1, 2]}, "'enum'/'const' at #"),
    ({"type": "strin"}, "'type' 'strin' at #/type"),
    ({"type": ["string", "string"]}, "'type' ['string', 'string'] at #/type"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "'minItems' 3 > 'maxItems' 2 at #"),
    ({"type": "string", "minLength": -1}, "'minLength' must be a non-negative integer at #/minLength"),
    ({"type": "array", "maxItems": 1.5}, "'maxItems' must be a non-negative integer at #/maxItems"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "'minimum'/'maximum' at #"),
    ({"type": "integer", "minimum": "5"}, "'minimum' must be a finite number at #/minimum"),
    ({"type": "string", "pattern": "("}, "'pattern' at #/pattern"),
    ({"type": "string", "pattern": "a+", "maxLength": 3}, "combining pattern and minLength/maxLength at #"),
    ({"$ref": "#/$defs/missing"}, "'$ref' '#/$defs/missing' at #/$ref"),
    ({"$ref": "https://example.com/s.json"}, "'$ref' pointers"),
    ({"$ref": "#anchor"}, "'$ref' pointers"),
    ({"$ref": "#/$defs/a", "type": "string", "$defs": {"a": {}}}, "keyword 'type' beside '$ref' at #"),
    (
        {"properties": {"a": {"type": "string"}}, "required": ["b"]},
        "required property 'b' is not in 'properties' at #",
    ),
    ({"type": "object", "properties": {"x": False}, "required": ["x"]}, "false at #/properties/x"),
    (
        {"properties": {"a/b": {"type": "array", "items": {"format": "nope"}}}},
        "format 'nope' at #/properties/a~1b/items/format",
    ),
    ({"minLength": 1, "minItems": 1}, "imply several types"),
    (
        {"type": "array", "prefixItems": [{"type": "null"}], "items": False, "minItems": 2},
        "'minItems' 2 at #",
    ),
    (False, "false at #"),
]


@pytest.mark.parametrize("schema, message", ERRORS)
def test_unsupported_and_bad_schemas(schema, message):
    with pytest.raises(JSONSchemaError, match=re.escape(message)):
        json_schema_to_regex(schema)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schema=42), "schema: expected a dict"),
        (dict(schema="{not json"), "schema: not valid JSON"),
        (dict(schema={}, whitespace="(["), "whitespace:"),
        (dict(schema={}, max_recursion_depth=-1), "max_recursion_depth:"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(JSONSchemaError, match=re.escape(message)):
        json_schema_to_regex(**kwargs)


def test_error_is_a_value_error():
    assert issubclass(JSONSchemaError, ValueError)
