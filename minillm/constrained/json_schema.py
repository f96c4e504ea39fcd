"""JSON Schema -> regex: chapter 5's front end for structured output.

`json_schema_to_regex(schema)` returns a regex whose full matches are JSON texts valid under the schema.
The regex engine (minillm.constrained.regex) turns it into a byte DFA, and the decoder masks every token
that would leave the DFA, so the model can only write a valid document. The regex accepts a subset of
the valid documents (one layout, members in schema order, no unlisted members), never an invalid one,
except where noted below (a user's pattern).

The translation is a recursive walk over the schema; each subschema becomes one regex fragment and the
fragments are concatenated. Every fragment returned is safe to concatenate (any top-level alternation is
wrapped in a `(?:...)` group). The emitted regex uses a small dialect that our own engine and Python's
`re.fullmatch` agree on: literals and `\\`-escapes, classes, `* + ? {m} {m,} {m,n}`, `|` and groups;
never `\\d \\w \\s` (Python's `re` gives those a Unicode meaning), anchors, lookaround, backreferences.

Whitespace policy
-----------------
By default the layout is fixed and deterministic, the one `json.dumps(obj)` writes with its default
separators: `", "` between items and members, `": "` after keys, and no other whitespace (no newlines,
no space inside brackets). A deterministic layout makes long stretches of output forced: after `{` the
only way on in a character card is `"name": "`, and a compressed FSM jumps over such runs without
calling the model; the model still sees a format it has read many times.
`whitespace=r"[ ]?"` (any regex) switches to a flexible layout: that pattern is inserted after `{` and
`[`, before `}` and `]`, and on both sides of `,` and `:`. It must match whitespace only.

How each keyword translates
---------------------------
- `type`: object, array, string, integer, number, boolean, null, or a list of them (an alternation).
  Without `type`, keywords imply one (`properties` -> object, `items` -> array, `pattern` -> string, ...);
  with none, and for `{}` / `true`, any JSON value, nested at most `max_recursion_depth` containers deep.
- object: `properties` are written in the order given. `required` members are always written, the
  others may be left out; separators are right for every subset, in O(n^2) regex size (see `_members`).
  `additionalProperties` is accepted and ignored when `properties` is given: we never write a member
  that is not listed, which is valid whatever it says. Without `properties`, the object has any string
  keys, and its values follow `additionalProperties` (`false` -> only `{}`; missing -> any value).
- array: `items`, `prefixItems`, `minItems`, `maxItems`; `uniqueItems: true` is refused (not regular).
  `items` as a list (the draft 4-7 tuple form) is refused: use `prefixItems`.
- string: any JSON string (escapes included; `\\u` surrogates only as pairs) with `minLength` and
  `maxLength` counted in characters (an escape is one character); or `pattern`, the user's regex: a
  leading `^` and trailing `$` are stripped and the rest must match the whole content (JSON Schema only
  asks for a match somewhere; a full match is one of those). It must not produce `"`, `\\` or control
  characters unescaped, and must stay in our engine's dialect: we do not check. Or `format`, one of
  FORMATS: date (0001-9999, exact days per month and leap years), time (RFC 3339: `HH:MM:SS`, optional
  fraction, then a required `Z` or `+HH:MM`), date-time, uuid, ipv4, and simple email and uri regexes
  (see FORMATS). Only one of pattern, format and the lengths at a time.
- integer: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers, as in draft 2020)
  become an exact digit-by-digit range regex (`integer_range_regex`).
- number: any JSON number. Bounds on numbers are refused: no exact regex is attempted.
- `enum` / `const`: any JSON values, written with the layout's separators (a non-ASCII character in
  a string may be raw or `\\u`-escaped); only `type` may sit beside them (it filters the values).
- `anyOf`: an alternation. `oneOf`: the same alternation, but only when its branches are provably
  disjoint, so that no document one branch writes is valid under another (oneOf rejects a document
  valid under two branches): branches of different JSON types, distinct `const`/`enum` values, or
  objects with a required discriminator property whose `const`/`enum` values differ (see `_disjoint`).
  Otherwise JSONSchemaError names the `oneOf` and the two branches; use `anyOf` if overlap is meant.
  `allOf` with exactly one subschema is that subschema.
- `$ref`: local JSON pointers (`#`, `#/$defs/...`, `#/definitions/...`, with `~0 ~1` and %-escapes).
  A reference may be entered at most `max_recursion_depth` times inside itself. Past that the branch
  cannot be written: an optional property, an `anyOf` branch or array elements beyond `minItems` are
  dropped; if nothing around it is optional, JSONSchemaError says the recursion is too deep. Each level
  copies the referenced regex, so the regex grows exponentially with the depth for branching schemas.
- Annotations are ignored (title, description, default, examples, $schema, $id, $comment, deprecated,
  readOnly, writeOnly, the $defs/definitions containers, and OpenAPI's `discriminator`, which only
  restates the `const` tags of its `oneOf` branches). Any other keyword raises JSONSchemaError naming
  it and its JSON pointer path: e.g. `not`, `if`, `patternProperties`, `contains`, `multipleOf`.

Checked by: pytest -m ch5 -k json_schema.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from minillm.constrained.json_shapes import TYPES, disjoint, is_number, json_type_matches, shape_of


class JSONSchemaError(ValueError):
    """A schema or option the translator cannot honour. The message names the keyword and its path."""


class _NoValue(JSONSchemaError):
    """No value can be written here: the schema `false`, or a `$ref` past the recursion limit.
    Optional places (optional properties, anyOf branches, array elements beyond minItems) catch it."""


# ---------------------------------------------------------------------------------------------------
# Regexes for scalars and formats
# ---------------------------------------------------------------------------------------------------

# One character of a JSON string: anything but `"`, `\` and U+0000-U+001F, or an escape. A `\u`
# escape of a UTF-16 surrogate must come as a pair (high D800-DBFF, then low DC00-DFFF): strict parsers
# reject a lone one.
_U_ESCAPE = r"\\u(?:[0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2})"
_U_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_CHAR = rf'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|{_U_ESCAPE}|{_U_PAIR})'
STRING = f'"{_CHAR}*"'
INTEGER = r"-?(?:0|[1-9][0-9]*)"
NUMBER = INTEGER + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
BOOLEAN = "(?:true|false)"
NULL = "null"

# Dates are exact: years 0001-9999 (as Python's datetime), days per month, Feb 29 in leap years only.
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
# RFC 3339 full-time: the offset is required; no leap second 60 (Python rejects it).
_HOUR_MINUTE = "(?:[01][0-9]|2[0-3]):[0-5][0-9]"
_TIME = rf"{_HOUR_MINUTE}:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-]{_HOUR_MINUTE})"
_HEX = "[0-9a-fA-F]"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"  # no leading zeros
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"  # a DNS label
# RFC 3986 pchar: unreserved, sub-delims, ":" and "@", or a %-escape.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"

FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}T{_TIME}",
    "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}",
    "ipv4": rf"{_OCTET}(?:\.{_OCTET}){{3}}",
    # A simple email: dot-separated atoms of [A-Za-z0-9_%+-], "@", a domain of two or more labels.
    "email": rf"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@{_LABEL}(?:\.{_LABEL})+",
    # A simple absolute URI: scheme://host[:port][/path][?query][#fragment], host a DNS name.
    "uri": (
        rf"[A-Za-z][A-Za-z0-9+.-]*://{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
        rf"(?:/{_PCHAR}*)*(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
    ),
}

# ---------------------------------------------------------------------------------------------------
# Small regex builders
# ---------------------------------------------------------------------------------------------------

_META = frozenset("\\.^$*+?{}[]|()")


def _literal(text: str) -> str:
    """A regex matching exactly `text` (which, coming from json.dumps, has no control characters)."""
    return "".join("\\" + c if c in _META else c for c in text)


def _string_literal(text: str) -> str:
    """A regex matching the JSON string `text` as json.dumps writes it, each non-ASCII character either
    raw (as models usually write it) or `\\u`-escaped (as json.dumps does by default)."""
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    chars = (_literal(c) if c.isascii() else f"(?:{c}|{_literal(json.dumps(c)[1:-1])})" for c in body)
    return '"' + "".join(chars) + '"'


def _alternation(parts: list[str]) -> str:
    """`a|b|c` grouped so it can be concatenated; a single part is returned as it is."""
    unique = list(dict.fromkeys(parts))
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def _repeat(atom: str, lo: int, hi: int | None) -> str:
    """`atom` repeated lo..hi times (hi None: unbounded). `atom` must be quantifiable (a group/class)."""
    if hi is None:
        return atom + ("*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}")
    if hi == 0:
        return ""
    if lo == hi:
        return atom if lo == 1 else f"{atom}{{{lo}}}"
    return atom + ("?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}")


# ---------------------------------------------------------------------------------------------------
# Integer ranges
# ---------------------------------------------------------------------------------------------------


def integer_range_regex(lo: int | None, hi: int | None) -> str:
    """Regex for the JSON integers n with lo <= n <= hi (None: unbounded on that side), written without
    leading zeros or `-0`. Negatives are `-` followed by a range of naturals: n in [lo, -1] <=> -n in
    [1, -lo]. Raises ValueError when the range is empty."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty integer range [{lo}, {hi}]")
    parts = []
    if lo is None or lo < 0:
        top = -1 if hi is None else min(hi, -1)
        if lo is None or lo <= top:
            parts.append("-" + _alternation(_natural_range(-top, None if lo is None else -lo)))
    if hi is None or hi >= 0:
        parts += _natural_range(0 if lo is None else max(lo, 0), hi)
    return _alternation(parts)


def _natural_range(lo: int, hi: int | None) -> list[str]:
    """Alternatives for the naturals lo..hi (hi None: unbounded), in runs of equal digit count."""
    width = len(str(lo))
    if hi is None:
        if lo == 0:
            return ["0", "[1-9][0-9]*"]
        if lo == 10 ** (width - 1):  # every number of `width` digits or more
            return ["[1-9]" + _repeat("[0-9]", width - 1, None)]
        return _same_width(str(lo), "9" * width) + ["[1-9]" + _repeat("[0-9]", width, None)]
    parts = []
    for w in range(width, len(str(hi)) + 1):
        first = max(lo, 10 ** (w - 1) if w > 1 else 0)
        parts += _same_width(str(first), str(min(hi, 10**w - 1)))
    return parts


def _same_width(low: str, high: str) -> list[str]:
    """Alternatives for the numbers from `low` to `high`, digit strings of the same length. The classic
    decomposition: a shared first digit is factored out; otherwise low's first digit with any tail >=
    low's tail, the digits strictly between with any tail, and high's first digit with any tail <= high's."""
    if low == high:
        return [low]
    if low[0] == high[0]:
        return [low[0] + _alternation(_same_width(low[1:], high[1:]))]
    rest = len(low) - 1
    first, last = int(low[0]), int(high[0])
    lower: list[str] = []
    middle: list[str] = []
    upper: list[str] = []
    if low[1:] != "0" * rest:  # low's first digit does not take every tail
        lower = [low[0] + _alternation(_same_width(low[1:], "9" * rest))]
        first += 1
    if high[1:] != "9" * rest:  # nor does high's
        upper = [high[0] + _alternation(_same_width("0" * rest, high[1:]))]
        last -= 1
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        middle = [digit + _repeat("[0-9]", rest, rest)]
    return lower + middle + upper


# ---------------------------------------------------------------------------------------------------
# The translator
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The structural tokens as regexes; the whitespace policy lives here and nowhere else."""

    obj_open: str
    obj_close: str
    arr_open: str
    arr_close: str
    item_sep: str
    key_sep: str

    @classmethod
    def fixed(cls) -> _Layout:
        return cls(r"\{", r"\}", r"\[", r"\]", ", ", ": ")

    @classmethod
    def flexible(cls, whitespace: str) -> _Layout:
        ws = f"(?:{whitespace})"
        return cls(r"\{" + ws, ws + r"\}", r"\[" + ws, ws + r"\]", f"{ws},{ws}", f"{ws}:{ws}")


_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
    | {"readOnly", "writeOnly", "$defs", "definitions", "discriminator"}
)
_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
# Keywords that only apply to one type, and so imply it when `type` is missing.
_IMPLIED_TYPE = {
    **dict.fromkeys(("properties", "required", "additionalProperties"), "object"),
    **dict.fromkeys(("items", "prefixItems", "minItems", "maxItems", "uniqueItems"), "array"),
    **dict.fromkeys(("minLength", "maxLength", "pattern", "format"), "string"),
    **dict.fromkeys(_BOUNDS, "number"),
}
_COMBINATORS = ("anyOf", "oneOf", "allOf")
_KNOWN = _ANNOTATIONS | set(_IMPLIED_TYPE) | {"type", "enum", "const", "$ref", *_COMBINATORS}


def _child(path: str, *keys: str | int) -> str:
    """Extend a JSON pointer (`#/a/b`) by keys, escaping `~` and `/` as the pointer syntax requires."""
    return path + "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in keys)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Translator:
    def __init__(self, root: Any, layout: _Layout, max_depth: int):
        self.root = root
        self.layout = layout
        self.max_depth = max_depth
        self.active_refs: list[str] = ["#"]  # the $refs being expanded, outermost first
        self.any_cache: dict[int, str] = {}
        self.handlers = {
            "object": self.object,
            "array": self.array,
            "string": self.string,
            "integer": self.integer,
            "number": self.number,
            "boolean": lambda schema, path: BOOLEAN,
            "null": lambda schema, path: NULL,
        }

    def translate(self, schema: Any, path: str) -> str:
        if schema is True:
            return self.any_value(self.max_depth)
        if schema is False:
            raise _NoValue(f"the schema false at {path} accepts no value")
        if not isinstance(schema, dict):
            raise JSONSchemaError(f"a schema must be an object or a boolean, got {schema!r} at {path}")
        for keyword in schema:
            if keyword not in _KNOWN:
                raise JSONSchemaError(f"unsupported keyword {keyword!r} at {path}")
        if "$ref" in schema:
            self._only_with(schema, "$ref", set(), path)
            return self.ref(schema["$ref"], _child(path, "$ref"))
        combinators = [k for k in _COMBINATORS if k in schema]
        if combinators:
            self._only_with(schema, combinators[0], set(), path)
            return self.combinator(combinators[0], schema[combinators[0]], _child(path, combinators[0]))
        if "enum" in schema or "const" in schema:
            self._only_with(schema, "enum" if "enum" in schema else "const", {"enum", "const", "type"}, path)
            return self.enum(schema, path)
        types = self.types(schema, path)
        if types is None:
            return self.any_value(self.max_depth)
        return _alternation([self.handlers[t](schema, path) for t in types])

    @staticmethod
    def _only_with(schema: dict, keyword: str, allowed: set[str], path: str) -> None:
        """Refuse assertion keywords beside `keyword`: their intersection with it is not supported."""
        for other in schema:
            if other != keyword and other not in _ANNOTATIONS and other not in allowed:
                raise JSONSchemaError(f"keyword {other!r} beside {keyword!r} at {path} is not supported")

    # --- references and combinators ---------------------------------------------------------------

    def ref(self, ref: Any, path: str) -> str:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise JSONSchemaError(f"only local '$ref' pointers (#/...) are supported, got {ref!r} at {path}")
        target = self._resolve(ref, path)
        if self.active_refs.count(ref) > self.max_depth:
            raise _NoValue(
                f"recursion too deep: '$ref' {ref!r} at {path} would nest more than "
                f"max_recursion_depth={self.max_depth} times, and nothing around it is optional"
            )
        self.active_refs.append(ref)
        try:
            return self.translate(target, ref)
        finally:
            self.active_refs.pop()

    def _resolve(self, ref: str, path: str) -> Any:
        node = self.root
        for token in unquote(ref).split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise JSONSchemaError(f"'$ref' {ref!r} at {path} does not resolve")
        return node

    def combinator(self, keyword: str, branches: Any, path: str) -> str:
        if not isinstance(branches, list) or not branches:
            raise JSONSchemaError(f"{keyword!r} must be a non-empty array at {path}")
        if keyword == "allOf":
            if len(branches) != 1:
                raise JSONSchemaError(f"'allOf' with {len(branches)} subschemas at {path} is not supported")
            return self.translate(branches[0], _child(path, 0))
        if keyword == "oneOf":
            self._check_disjoint(branches, path)
        parts: list[str] = []
        dropped: _NoValue | None = None
        for i, branch in enumerate(branches):
            try:
                parts.append(self.translate(branch, _child(path, i)))
            except _NoValue as e:
                dropped = dropped or e
        if not parts:
            assert dropped is not None
            raise dropped
        return _alternation(parts)

    def _check_disjoint(self, branches: list, path: str) -> None:
        """oneOf rejects a document valid under two branches, and the regex is their alternation: refuse
        unless no branch can write a document another branch accepts (minillm/constrained/json_shapes.py)."""
        shapes = [
            shape_of(b, lambda ref: self._resolve(ref, path), lambda schema: self.types(schema, path))
            for b in branches
        ]
        for i, j in itertools.combinations(range(len(shapes)), 2):
            if not disjoint(shapes[i], shapes[j]):
                raise JSONSchemaError(
                    f"'oneOf' at {path}: branches {i} and {j} are not provably disjoint, and oneOf rejects a"
                    " document valid under both; give them different types, distinct 'const'/'enum'"
                    " values or a required property with distinct 'const'/'enum' values, or use 'anyOf'"
                )

    # --- enum and const ---------------------------------------------------------------------------

    def enum(self, schema: dict, path: str) -> str:
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise JSONSchemaError(f"'enum' must be a non-empty array at {_child(path, 'enum')}")
        if "const" in schema:
            const = schema["const"]
            values = [v for v in values if self._same(v, const)] if "enum" in schema else [const]
        types = self.types(schema, path)
        if types is not None:
            values = [v for v in values if any(json_type_matches(v, t) for t in types)]
        if not values:
            raise JSONSchemaError(f"no value of 'enum'/'const' at {path} satisfies the other keywords")
        return _alternation([self.value_literal(v, path) for v in values])

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # keeps true != 1

    def value_literal(self, value: Any, path: str) -> str:
        """A regex matching exactly `value` written in this layout."""
        lay = self.layout
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise JSONSchemaError(
                    f"'enum'/'const' object {value!r} at {path} has a key that is not a string"
                )
            members = [
                self.value_literal(k, path) + lay.key_sep + self.value_literal(v, path)
                for k, v in value.items()
            ]
            return lay.obj_open + lay.item_sep.join(members) + lay.obj_close
        if isinstance(value, list):
            return (
                lay.arr_open + lay.item_sep.join(self.value_literal(v, path) for v in value) + lay.arr_close
            )
        if isinstance(value, str):
            return _string_literal(value)
        try:
            return _literal(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise JSONSchemaError(f"'enum'/'const' value {value!r} at {path} is not JSON: {e}") from None

    # --- types ------------------------------------------------------------------------------------

    def types(self, schema: dict, path: str) -> list[str] | None:
        """The schema's types: `type`, else the one its keywords imply, else None (any value)."""
        if "type" not in schema:
            implied = sorted({_IMPLIED_TYPE[k] for k in schema if k in _IMPLIED_TYPE})
            if len(implied) > 1:
                raise JSONSchemaError(f"keywords at {path} imply several types {implied}; add 'type'")
            return implied or None
        value = schema["type"]
        names = value if isinstance(value, list) else [value]
        if not names or len(set(map(str, names))) != len(names) or any(n not in TYPES for n in names):
            raise JSONSchemaError(f"invalid 'type' {value!r} at {_child(path, 'type')}")
        return names

    def any_value(self, depth: int) -> str:
        """Any JSON value, containers nested at most `depth` deep."""
        if depth not in self.any_cache:
            parts = [STRING, NUMBER, BOOLEAN, NULL]
            if depth > 0:
                inner = self.any_value(depth - 1)
                parts += [self._map_object(inner), self._list_array(inner)]
            self.any_cache[depth] = _alternation(parts)
        return self.any_cache[depth]

    def _map_object(self, value: str) -> str:
        """An object with any string keys, each mapped to `value`."""
        lay = self.layout
        member = STRING + lay.key_sep + value
        return f"{lay.obj_open}(?:{member}(?:{lay.item_sep}{member})*)?{lay.obj_close}"

    def _list_array(self, item: str) -> str:
        lay = self.layout
        return f"{lay.arr_open}(?:{item}(?:{lay.item_sep}{item})*)?{lay.arr_close}"

    # --- objects ----------------------------------------------------------------------------------

    def object(self, schema: dict, path: str) -> str:
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise JSONSchemaError(f"'required' must be an array of strings at {_child(path, 'required')}")
        if "properties" not in schema:
            if required:
                raise JSONSchemaError(f"'required' without 'properties' at {path} is not supported")
            return self._additional_only(schema.get("additionalProperties", True), path)
        properties = schema["properties"]
        if not isinstance(properties, dict):
            raise JSONSchemaError(f"'properties' must be an object at {_child(path, 'properties')}")
        for name in required:
            if name not in properties:
                raise JSONSchemaError(f"required property {name!r} is not in 'properties' at {path}")
        members: list[tuple[str, bool]] = []
        for name, subschema in properties.items():
            key = self.value_literal(name, path) + self.layout.key_sep
            try:
                members.append(
                    (key + self.translate(subschema, _child(path, "properties", name)), name in required)
                )
            except _NoValue:
                if name in required:
                    raise
                # an optional member that cannot be written is left out
        return self.layout.obj_open + self._members(members) + self.layout.obj_close

    def _members(self, members: list[tuple[str, bool]]) -> str:
        """Members in order, required ones always present, optional ones maybe, separated by item_sep.

        With a required member r, every optional member before r is followed by a separator and every
        member after r is preceded by one: O(n). With none required, alternate over which member comes
        first (or none): member i, then each later member optionally with its separator: O(n^2)."""
        sep = self.layout.item_sep
        first_required = next((i for i, (_, req) in enumerate(members) if req), None)
        if first_required is not None:
            before = "".join(f"(?:{m}{sep})?" for m, _ in members[:first_required])
            after = "".join(
                f"{sep}{m}" if req else f"(?:{sep}{m})?" for m, req in members[first_required + 1 :]
            )
            return before + members[first_required][0] + after
        if not members:
            return ""
        starts = [
            m + "".join(f"(?:{sep}{later})?" for later, _ in members[i + 1 :])
            for i, (m, _) in enumerate(members)
        ]
        return f"(?:{'|'.join(starts)})?"

    def _additional_only(self, additional: Any, path: str) -> str:
        if additional is False:
            return self.layout.obj_open + self.layout.obj_close
        try:
            value = self.translate(additional, _child(path, "additionalProperties"))
        except _NoValue:
            return self.layout.obj_open + self.layout.obj_close
        return self._map_object(value)

    # --- arrays -----------------------------------------------------------------------------------

    def array(self, schema: dict, path: str) -> str:
        lo = self._count(schema, "minItems", path, 0)
        hi = self._count(schema, "maxItems", path, None)
        if hi is not None and lo > hi:
            raise JSONSchemaError(f"'minItems' {lo} > 'maxItems' {hi} at {path}")
        if schema.get("uniqueItems", False) is not False:
            raise JSONSchemaError(f"'uniqueItems' at {path} is not supported (not a regular language)")
        items = schema.get("items", True)
        if isinstance(items, list):
            raise JSONSchemaError(f"'items' as an array at {path} is not supported; use 'prefixItems'")
        prefix_schemas = schema.get("prefixItems", [])
        if not isinstance(prefix_schemas, list):
            raise JSONSchemaError(f"'prefixItems' must be an array at {_child(path, 'prefixItems')}")
        # Elements that cannot be written cap the length: a prefix item at index i caps it at i.
        prefix: list[str] = []
        item: str | None = None
        blocked: _NoValue | None = None
        try:
            for i, subschema in enumerate(prefix_schemas[:hi]):
                prefix.append(self.translate(subschema, _child(path, "prefixItems", i)))
            if len(prefix) == len(prefix_schemas) and items is not False:
                item = self.translate(items, _child(path, "items"))
        except _NoValue as e:
            blocked = e
        if item is None:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        if hi is not None and lo > hi:
            raise blocked or JSONSchemaError(f"'minItems' {lo} at {path} exceeds the {hi} items allowed")
        return self.layout.arr_open + self._elements(prefix, item, lo, hi) + self.layout.arr_close

    def _elements(self, prefix: list[str], item: str | None, lo: int, hi: int | None) -> str:
        """lo..hi separated elements: prefix[i] at index i, then `item`. Built back to front: after n
        elements, the rest is optional once n >= lo."""
        if hi == 0:
            return ""
        sep = self.layout.item_sep
        n = max(len(prefix), 1)
        rest = (
            ""
            if item is None
            else _repeat(f"(?:{sep}{item})", max(lo - n, 0), None if hi is None else hi - n)
        )
        for i in range(len(prefix) - 1, 0, -1):
            rest = f"(?:{sep}{prefix[i]}{rest})" + ("?" if i >= lo else "")
        body = (prefix[0] if prefix else item) + rest
        return body if lo > 0 else f"(?:{body})?"

    # --- strings ----------------------------------------------------------------------------------

    def string(self, schema: dict, path: str) -> str:
        lengths = ["minLength/maxLength"] if "minLength" in schema or "maxLength" in schema else []
        kinds = [k for k in ("format", "pattern") if k in schema] + lengths
        if len(kinds) > 1:
            raise JSONSchemaError(f"combining {' and '.join(kinds)} at {path} is not supported")
        if "format" in schema:
            fmt = schema["format"]
            if fmt not in FORMATS:
                raise JSONSchemaError(f"unsupported format {fmt!r} at {_child(path, 'format')}")
            return f'"{FORMATS[fmt]}"'
        if "pattern" in schema:
            return f'"(?:{self._pattern_body(schema["pattern"], _child(path, "pattern"))})"'
        lo = self._count(schema, "minLength", path, 0)
        hi = self._count(schema, "maxLength", path, None)
        if hi is not None and lo > hi:
            raise JSONSchemaError(f"'minLength' {lo} > 'maxLength' {hi} at {path}")
        return '"' + _repeat(_CHAR, lo, hi) + '"'

    @staticmethod
    def _pattern_body(pattern: Any, path: str) -> str:
        if not isinstance(pattern, str):
            raise JSONSchemaError(f"'pattern' must be a string at {path}")
        try:
            re.compile(pattern)
        except re.error as e:
            raise JSONSchemaError(f"'pattern' at {path} is not a valid regex: {e}") from None
        body = pattern.removeprefix("^")
        trailing_backslashes = len(body[:-1]) - len(body[:-1].rstrip("\\"))
        if body.endswith("$") and trailing_backslashes % 2 == 0:  # a `$` anchor, not an escaped `\$`
            body = body[:-1]
        return body

    # --- numbers ----------------------------------------------------------------------------------

    def integer(self, schema: dict, path: str) -> str:
        lo = hi = None
        for keyword in (k for k in _BOUNDS if k in schema):
            bound, exclusive = schema[keyword], keyword.startswith("exclusive")
            if not is_number(bound):
                raise JSONSchemaError(f"{keyword!r} must be a finite number at {_child(path, keyword)}")
            if keyword.endswith(("minimum", "Minimum")):
                least = math.floor(bound) + 1 if exclusive else math.ceil(bound)
                lo = least if lo is None else max(lo, least)
            else:
                most = math.ceil(bound) - 1 if exclusive else math.floor(bound)
                hi = most if hi is None else min(hi, most)
        if lo is None and hi is None:
            return INTEGER
        if lo is not None and hi is not None and lo > hi:
            bounds = "/".join(repr(k) for k in _BOUNDS if k in schema)
            raise JSONSchemaError(f"no integer satisfies {bounds} at {path}")
        return integer_range_regex(lo, hi)

    def number(self, schema: dict, path: str) -> str:
        for keyword in _BOUNDS:
            if keyword in schema:
                raise JSONSchemaError(
                    f"{keyword!r} on a number at {_child(path, keyword)} is not supported (no exact regex); "
                    "use 'type': 'integer' or drop the bound"
                )
        return NUMBER

    @staticmethod
    def _count(schema: dict, keyword: str, path: str, default: int | None) -> int | None:
        if keyword not in schema:
            return default
        if not _is_count(schema[keyword]):
            raise JSONSchemaError(f"{keyword!r} must be a non-negative integer at {_child(path, keyword)}")
        return schema[keyword]


def _load(schema: Any) -> Any:
    """The schema as parsed JSON: from a dict/bool, a JSON string, or a pydantic model class."""
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):  # pydantic, never imported
        return schema.model_json_schema()
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except json.JSONDecodeError as e:
            raise JSONSchemaError(f"schema: not valid JSON ({e})") from None
    if isinstance(schema, (dict, bool)):
        return schema
    raise JSONSchemaError(
        f"schema: expected a dict, a JSON string or a pydantic model class, got {type(schema).__name__}"
    )


def json_schema_to_regex(schema: Any, *, whitespace: str | None = None, max_recursion_depth: int = 3) -> str:
    """A regex (our engine's dialect, also valid for Python's re.fullmatch) matching JSON texts valid
    under `schema`: a dict, a JSON string, or a pydantic BaseModel subclass. `whitespace=None` gives the
    fixed `json.dumps` layout; a regex gives a flexible one (see the module docstring). Raises
    JSONSchemaError naming the keyword and JSON pointer path of anything it cannot translate."""
    if whitespace is None:
        layout = _Layout.fixed()
    else:
        try:
            re.compile(whitespace)
        except (re.error, TypeError) as e:
            raise JSONSchemaError(f"whitespace: {whitespace!r} is not a valid regex ({e})") from None
        layout = _Layout.flexible(whitespace)
    if not _is_count(max_recursion_depth):
        raise JSONSchemaError(
            f"max_recursion_depth: must be a non-negative integer, got {max_recursion_depth!r}"
        )
    root = _load(schema)
    return _Translator(root, layout, max_recursion_depth).translate(root, "#")
