"""Chapter 5: the regex parser, Python `re` syntax to a small AST (the first step of compile_regex).

The AST has four node kinds: Chars (one character from a set of code-point ranges), Concat, Alt and
Repeat (lo..hi copies, hi None for unbounded). Character sets are kept as sorted, merged code-point
ranges without the surrogates (no UTF-8 string holds one); minillm/constrained/automata.py turns
them into byte-range chains.

Supported: literals and escapes, classes, `.`, \\d \\w \\s and negations (ASCII meaning, as `re.ASCII`),
`* + ? {m} {m,} {,n} {m,n}` and their lazy forms, `|`, `( )`, `(?: )`, `(?P<name> )`, `(?#...)`, and
`^` / `$` at the very start / end (full-match semantics: they change nothing there). Lookarounds,
backreferences, word boundaries, possessive quantifiers, atomic groups, conditionals and inline flags
raise RegexSyntaxError: they are not regular, or would change the language in ways a plain DFA cannot
express here. The grammar and the error messages follow Python's sre_parse.

Checked by: pytest -m ch5 tests/test_ch5_regex.py (constructs, errors, hypothesis against re.fullmatch).
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass

MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)  # lone surrogates cannot be UTF-8 encoded, so no pattern can match them

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive code-point ranges


class RegexError(ValueError):
    """The pattern cannot be compiled (its language is empty, or a subclass says why)."""


class RegexSyntaxError(RegexError):
    """Malformed or unsupported syntax; `pos` is the offending position in the pattern."""

    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.pos = pos


# ---------------------------------------------------------------------------------------------------
# Code-point sets
# ---------------------------------------------------------------------------------------------------


def _normalise(ranges: list[tuple[int, int]] | Ranges) -> Ranges:
    """Sort and merge ranges, and remove the surrogates (no UTF-8 string contains them)."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    out = []
    for lo, hi in merged:
        if lo < SURROGATES[0]:
            out.append((lo, min(hi, SURROGATES[0] - 1)))
        if hi > SURROGATES[1]:
            out.append((max(lo, SURROGATES[1] + 1), hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    """Every code point (surrogates excepted) not in `ranges`."""
    gaps, start = [], 0
    for lo, hi in _normalise(ranges):
        if lo > start:
            gaps.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        gaps.append((start, MAX_CODE_POINT))
    return _normalise(gaps)


_DIGIT = _normalise([(ord("0"), ord("9"))])
_WORD = _normalise([(ord("a"), ord("z")), (ord("A"), ord("Z")), (ord("0"), ord("9")), (ord("_"), ord("_"))])
_SPACE = _normalise([(ord(c), ord(c)) for c in " \t\n\r\f\v"])
_SHORTHANDS = {
    "d": _DIGIT,
    "w": _WORD,
    "s": _SPACE,
    "D": _complement(_DIGIT),
    "W": _complement(_WORD),
    "S": _complement(_SPACE),
}
_DOT = _complement(((ord("\n"), ord("\n")),))
_CONTROL_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}

# ---------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chars:
    """One character from a set of code points."""

    ranges: Ranges


@dataclass(frozen=True)
class Concat:
    """The items one after another; no items matches the empty string."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    branches: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    """`item` repeated lo..hi times; hi None means unbounded."""

    item: Node
    lo: int
    hi: int | None


Node = Chars | Concat | Alt | Repeat
EMPTY = Concat(())


def parse(pattern: str) -> Node:
    """The AST of `pattern`; raises RegexSyntaxError naming the position of what is malformed or
    unsupported."""
    return _Parser(pattern).parse()


# ---------------------------------------------------------------------------------------------------
# Parser (recursive descent; mirrors the grammar and error cases of Python's sre_parse)
# ---------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, pattern: str):
        self.pattern = pattern
        self.pos = 0
        self.group_names: set[str] = set()

    def parse(self) -> Node:
        if self.pattern.startswith("^"):  # full-match semantics: a leading ^ changes nothing
            self.pos = 1
        node = self._alternation()
        if self.pos < len(self.pattern):  # _alternation only stops early at ')'
            raise self._error("unbalanced parenthesis", self.pos)
        return node

    # -- helpers ------------------------------------------------------------------------------------

    def _peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.pattern[i] if i < len(self.pattern) else ""

    def _peek_in(self, chars: str, offset: int = 0) -> bool:
        c = self._peek(offset)
        return c != "" and c in chars

    def _error(self, message: str, pos: int) -> RegexSyntaxError:
        return RegexSyntaxError(f"{message} at position {pos}", pos)

    def _unsupported(self, what: str, pos: int) -> RegexSyntaxError:
        return RegexSyntaxError(f"{what} at position {pos} is not supported (this engine builds a DFA)", pos)

    # -- structure ----------------------------------------------------------------------------------

    def _alternation(self) -> Node:
        branches = [self._concatenation()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._concatenation())
        return branches[0] if len(branches) == 1 else Alt(tuple(branches))

    def _concatenation(self) -> Node:
        items = []
        while self._peek() not in ("", "|", ")"):
            items.append(self._quantified())
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def _quantified(self) -> Node:
        if self._quantifier_at(self.pos) is not None:
            raise self._error("nothing to repeat", self.pos)
        node = self._atom()
        quantifier = self._quantifier_at(self.pos)
        if quantifier is None:
            return node
        lo, hi, end = quantifier
        if hi is not None and hi < lo:
            raise self._error(f"bad repeat {self.pattern[self.pos : end]}: min greater than max", self.pos)
        self.pos = end
        if self._peek() == "?":  # lazy: the same language under full-match semantics
            self.pos += 1
        elif self._peek() == "+":
            raise self._unsupported("possessive quantifier", self.pos - 1)
        if self._quantifier_at(self.pos) is not None:
            raise self._error("multiple repeat", self.pos)
        return Repeat(node, lo, hi)

    def _quantifier_at(self, i: int) -> tuple[int, int | None, int] | None:
        """(lo, hi, end) if a quantifier starts at i. A '{' that is not a well-formed {m}, {m,}, {,n} or
        {m,n} is a literal, as in Python."""
        p = self.pattern
        if i >= len(p):
            return None
        if p[i] in "*+?":
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[p[i]] + (i + 1,)
        if p[i] != "{":
            return None
        j = i + 1
        while j < len(p) and p[j] in string.digits:
            j += 1
        lo_digits = p[i + 1 : j]
        if j < len(p) and p[j] == ",":
            k = j + 1
            while k < len(p) and p[k] in string.digits:
                k += 1
            hi_digits = p[j + 1 : k]
        elif lo_digits:
            k, hi_digits = j, lo_digits
        else:  # "{}" or "{x": a literal brace
            return None
        if k >= len(p) or p[k] != "}":
            return None
        lo = self._count(lo_digits, i) if lo_digits else 0
        hi = self._count(hi_digits, i) if hi_digits else None
        return lo, hi, k + 1

    def _count(self, digits: str, pos: int) -> int:
        if len(digits) > 9:  # Python's limit is 2**32 - 2; far beyond what any automaton could hold
            raise self._error(f"repetition count {digits[:12]}... is too large", pos)
        return int(digits)

    # -- atoms --------------------------------------------------------------------------------------

    def _atom(self) -> Node:
        c, start = self._peek(), self.pos
        if c == "(":
            return self._group()
        if c == "[":
            return Chars(self._class())
        if c == "\\":
            ranges, _ = self._escape(in_class=False)
            return Chars(ranges)
        self.pos += 1
        if c == ".":
            return Chars(_DOT)
        if c == "$" and start == len(self.pattern) - 1:  # full-match semantics: a final $ changes nothing
            return EMPTY
        if c in "^$":
            raise self._unsupported(f"anchor {c} (allowed only at the very start/end)", start)
        return Chars(_normalise([(ord(c), ord(c))]))

    def _group(self) -> Node:
        start = self.pos
        self.pos += 1
        if self._peek() == "?":
            if self._extension(start):  # a comment
                return EMPTY
        node = self._alternation()
        if self._peek() != ")":
            raise self._error("missing ), unterminated subpattern", start)
        self.pos += 1
        return node

    def _extension(self, start: int) -> bool:
        """Parse what follows '(?'. Returns True for a (?#comment), already skipped; False when the group
        body follows; raises for unsupported extensions."""
        p, i = self.pattern, self.pos + 1
        rest = p[i:]
        if rest.startswith(":"):
            self.pos = i + 1
            return False
        if rest.startswith("P<"):
            end = p.find(">", i + 2)
            name = p[i + 2 : end] if end >= 0 else ""
            if end < 0 or not name.isidentifier():
                raise self._error(f"bad group name {name!r}", i + 2)
            if name in self.group_names:
                raise self._error(f"redefinition of group name {name!r}", i + 2)
            self.group_names.add(name)
            self.pos = end + 1
            return False
        if rest.startswith("#"):
            end = p.find(")", i)
            if end < 0:
                raise self._error("missing ), unterminated comment", start)
            self.pos = end + 1
            return True
        unsupported = [
            ("P=", "backreference (?P=name)"),
            ("=", "lookahead (?=...)"),
            ("!", "negative lookahead (?!...)"),
            ("<=", "lookbehind (?<=...)"),
            ("<!", "negative lookbehind (?<!...)"),
            (">", "atomic group (?>...)"),
            ("(", "conditional (?(id)yes|no)"),
        ]
        for prefix, what in unsupported:
            if rest.startswith(prefix):
                raise self._unsupported(what, start)
        if rest[:1] and rest[0] in "aiLmsux-":
            raise self._unsupported("inline flags (?i)", start)
        raise self._error(f"unknown extension ?{rest[:2]}", start + 1)

    def _class(self) -> Ranges:
        start = self.pos
        self.pos += 1
        negate = self._peek() == "^"
        if negate:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self._peek()
            if c == "":
                raise self._error("unterminated character set", start)
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            item_start = self.pos
            lo_set, lo = self._class_item()
            if self._peek() == "-" and self._peek(1) not in ("", "]"):
                self.pos += 1
                _, hi = self._class_item()
                text = self.pattern[item_start : self.pos]
                if lo is None or hi is None or hi < lo:
                    raise self._error(f"bad character range {text}", item_start)
                ranges.append((lo, hi))
            else:
                ranges.extend(lo_set)
        return _complement(tuple(ranges)) if negate else _normalise(ranges)

    def _class_item(self) -> tuple[Ranges, int | None]:
        if self._peek() == "\\":
            return self._escape(in_class=True)
        c = self._peek()
        self.pos += 1
        return ((ord(c), ord(c)),), ord(c)

    def _escape(self, in_class: bool) -> tuple[Ranges, int | None]:
        """Parse a backslash escape: (its code-point set, its code point if it is a single character)."""
        start = self.pos
        c = self._peek(1)
        self.pos += 2
        if c == "":
            raise self._error("bad escape (end of pattern)", start)
        if c in _SHORTHANDS:
            return _SHORTHANDS[c], None
        if c == "b" and in_class:
            return self._single(8)
        code = self._escape_code_point(c, in_class, start)
        return self._single(code)

    def _single(self, code: int) -> tuple[Ranges, int]:
        return _normalise([(code, code)]), code

    def _escape_code_point(self, c: str, in_class: bool, start: int) -> int:
        if c in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[c]
        if c in _HEX_ESCAPES:
            return self._hex_escape(c, start)
        if c == "N":
            return self._named_escape(start)
        if c in string.octdigits and (in_class or c == "0"):
            return self._octal(c, 2, start)
        if c in string.digits:
            return self._octal_or_backreference(c, in_class, start)
        if c in "bB":
            raise self._unsupported(f"\\{c} word boundary", start)
        if c in "AZ":
            raise self._unsupported(f"\\{c} anchor (\\A/\\Z anchors)", start)
        if c in string.ascii_letters:
            raise self._error(f"bad escape \\{c}", start)
        return ord(c)

    def _hex_escape(self, c: str, start: int) -> int:
        n = _HEX_ESCAPES[c]
        digits = self.pattern[self.pos : self.pos + n]
        if len(digits) != n or any(d not in string.hexdigits for d in digits):
            raise self._error(f"incomplete escape \\{c}{digits}", start)
        self.pos += n
        code = int(digits, 16)
        if code > MAX_CODE_POINT:
            raise self._error(f"bad escape \\{c}{digits}", start)
        return code

    def _named_escape(self, start: int) -> int:
        end = self.pattern.find("}", self.pos)
        if self._peek() != "{" or end < 0:
            raise self._error("missing {NAME} after \\N", start)
        name = self.pattern[self.pos + 1 : end]
        try:
            code = ord(unicodedata.lookup(name))
        except KeyError:
            raise self._error(f"undefined character name {name!r}", start) from None
        self.pos = end + 1
        return code

    def _octal(self, first: str, more: int, start: int) -> int:
        digits = first
        while len(digits) <= more and self._peek_in(string.octdigits):
            digits += self._peek()
            self.pos += 1
        code = int(digits, 8)
        if code > 0o377:
            raise self._error(f"octal escape value \\{digits} outside of range 0-0o377", start)
        return code

    def _octal_or_backreference(self, first: str, in_class: bool, start: int) -> int:
        """Outside a class, \\ddd with three octal digits is a character, anything else a backreference."""
        if in_class:
            raise self._error(f"bad escape \\{first}", start)
        if (
            first in string.octdigits
            and self._peek_in(string.octdigits)
            and self._peek_in(string.octdigits, 1)
        ):
            return self._octal(first, 2, start)
        digits = first + (self._peek() if self._peek_in(string.digits) else "")
        raise self._unsupported(f"backreference \\{digits}", start)
