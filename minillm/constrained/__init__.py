"""Chapter 5: constrained decoding.

compile_regex turns a regex into a minimal DFA over UTF-8 bytes (minillm.constrained.regex);
json_schema_to_regex turns a JSON schema into such a regex (minillm.constrained.json_schema).
"""

from minillm.constrained.json_schema import JSONSchemaError, json_schema_to_regex
from minillm.constrained.regex import DFA, RegexError, RegexSyntaxError, RegexTooComplexError, compile_regex

__all__ = [
    "DFA",
    "JSONSchemaError",
    "RegexError",
    "RegexSyntaxError",
    "RegexTooComplexError",
    "compile_regex",
    "json_schema_to_regex",
]
