"""Chapter 5: a regex engine that compiles a pattern into a minimal DFA over UTF-8 bytes.

Constrained decoding asks, after every token, "which next tokens keep the output a prefix of some string
the regex accepts?". A DFA answers that in one table look-up per byte, so we compile once and walk it
many times. The pipeline is the textbook one:

1. Parse the pattern (Python `re` syntax, full-match semantics) into a small AST of character sets,
   concatenations, alternations and counted repetitions.
2. Thompson construction: every AST node becomes an NFA fragment with one start and one end state,
   glued together by epsilon (empty) edges. `a{3}` is three copies of `a`'s fragment, `a{0,3}` nests
   optional copies `(a(a(a)?)?)?` so that epsilon closures stay small.
3. Subset construction: a DFA state is the set of NFA states the NFA could be in (closed under epsilon
   edges). States are discovered breadth-first, so only reachable subsets are ever built.
4. Trimming: drop DFA states from which no accepting state can be reached. A missing transition then
   means "dead": the text can no longer match, whatever follows.
5. Minimisation (Hopcroft's partition refinement): merge states that accept exactly the same
   continuations. The result is the unique smallest DFA for the language, numbered breadth-first from
   the initial state with bytes in ascending order, so numbering is deterministic.

Why bytes and not characters? Tokenizers cut text into byte strings, and a token may end in the middle
of a multi-byte character ("€" is E2 82 AC, and a BPE token can hold just E2 82). An automaton over
bytes walks any token without decoding it. Character sets are therefore compiled to UTF-8 byte-range
sequences: [\\u0080-\\u07FF] becomes [C2-DF][80-BF], and a negated class such as [^"] becomes a
handful of such sequences instead of a million code points.

To stay fast the alphabet is first cut into byte classes, maximal byte intervals that every NFA edge
treats alike (often a few dozen); determinisation and minimisation run over classes, and only the final
DFA spells out one entry per byte.

Limits: `(a|b)*a(a|b){20}` needs 2**21 DFA states, and nested counted repetitions multiply NFA size.
compile_regex raises RegexTooComplexError past max_states DFA states (10x that for the NFA) or past
max_seconds, instead of running out of memory or time.

Supported: literals and escapes, classes, `.`, \\d \\w \\s and negations (ASCII meaning, as `re.ASCII`),
`* + ? {m} {m,} {,n} {m,n}` and their lazy forms, `|`, `( )`, `(?: )`, `(?P<name> )`, `(?#...)`, and
`^` / `$` at the very start / end. Lookarounds, backreferences, word boundaries, possessive quantifiers,
atomic groups, conditionals and inline flags raise RegexSyntaxError: they are not regular, or would
change the language in ways a plain DFA cannot express here.

Checked by: pytest -m ch5 (hypothesis against Python's re.fullmatch).
"""

from __future__ import annotations

import functools
import string
import time
import unicodedata
from collections import deque
from dataclasses import dataclass

MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)  # lone surrogates cannot be UTF-8 encoded, so no pattern can match them
NFA_STATES_PER_DFA_STATE = 10  # the NFA may hold this many times max_states before we give up

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive code-point ranges


class RegexError(ValueError):
    """The pattern cannot be compiled (its language is empty, or a subclass says why)."""


class RegexSyntaxError(RegexError):
    """Malformed or unsupported syntax; `pos` is the offending position in the pattern."""

    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.pos = pos


class RegexTooComplexError(RegexError):
    """The automaton would exceed max_states or construction would exceed max_seconds."""


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
class _Chars:
    """One character from a set of code points."""

    ranges: Ranges


@dataclass(frozen=True)
class _Concat:
    """The items one after another; no items matches the empty string."""

    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    branches: tuple[_Node, ...]


@dataclass(frozen=True)
class _Repeat:
    """`item` repeated lo..hi times; hi None means unbounded."""

    item: _Node
    lo: int
    hi: int | None


_Node = _Chars | _Concat | _Alt | _Repeat
_EMPTY = _Concat(())


# ---------------------------------------------------------------------------------------------------
# Parser (recursive descent; mirrors the grammar and error cases of Python's sre_parse)
# ---------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, pattern: str):
        self.pattern = pattern
        self.pos = 0
        self.group_names: set[str] = set()

    def parse(self) -> _Node:
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

    def _alternation(self) -> _Node:
        branches = [self._concatenation()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._concatenation())
        return branches[0] if len(branches) == 1 else _Alt(tuple(branches))

    def _concatenation(self) -> _Node:
        items = []
        while self._peek() not in ("", "|", ")"):
            items.append(self._quantified())
        return items[0] if len(items) == 1 else _Concat(tuple(items))

    def _quantified(self) -> _Node:
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
        return _Repeat(node, lo, hi)

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

    def _atom(self) -> _Node:
        c, start = self._peek(), self.pos
        if c == "(":
            return self._group()
        if c == "[":
            return _Chars(self._class())
        if c == "\\":
            ranges, _ = self._escape(in_class=False)
            return _Chars(ranges)
        self.pos += 1
        if c == ".":
            return _Chars(_DOT)
        if c == "$" and start == len(self.pattern) - 1:  # full-match semantics: a final $ changes nothing
            return _EMPTY
        if c in "^$":
            raise self._unsupported(f"anchor {c} (allowed only at the very start/end)", start)
        return _Chars(_normalise([(ord(c), ord(c))]))

    def _group(self) -> _Node:
        start = self.pos
        self.pos += 1
        if self._peek() == "?":
            if self._extension(start):  # a comment
                return _EMPTY
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


# ---------------------------------------------------------------------------------------------------
# UTF-8: code-point ranges -> byte-range sequences
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _utf8_sequences(lo: int, hi: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Byte-range sequences whose concatenations are exactly the UTF-8 encodings of lo..hi.

    A sequence like [E1-EC][80-BF][80-BF] is a product: any byte of the first range, then any of the
    second... To describe lo..hi by products we split it until lo and hi (a) have the same encoded length
    and (b) for every k, either agree on everything above their last k continuation bytes, or have those
    k bytes at their minimum (lo) and maximum (hi). Then byte i of the encodings ranges independently
    over [lo_i, hi_i]. Example: 0x80..0x10FF -> [C2-DF][80-BF] | [E0][A0-BF][80-BF] | [E1][80-83][80-BF].
    """
    for limit in (0x7F, 0x7FF, 0xFFFF):  # the largest code point with 1, 2 and 3 bytes
        if lo <= limit < hi:
            return _utf8_sequences(lo, limit) + _utf8_sequences(limit + 1, hi)
    for k in (1, 2, 3):
        mask = (1 << (6 * k)) - 1  # the payload bits of the last k continuation bytes
        if lo & ~mask != hi & ~mask:
            if lo & mask:
                return _utf8_sequences(lo, lo | mask) + _utf8_sequences((lo | mask) + 1, hi)
            if hi & mask != mask:
                return _utf8_sequences(lo, (hi & ~mask) - 1) + _utf8_sequences(hi & ~mask, hi)
    return (tuple(zip(chr(lo).encode("utf-8"), chr(hi).encode("utf-8"))),)


@functools.lru_cache(maxsize=1024)
def _char_chains(ranges: Ranges) -> tuple[int, tuple[tuple[int, int, int, int], ...]]:
    """The NFA fragment of one character from `ranges`, as (number of states, edges (source, lo, hi,
    target)) with local state numbers: 0 is the start, 1 the end. Each UTF-8 byte-range sequence is a
    chain from start to end, and chains share common suffixes: all of [E1-EC][80-BF][80-BF] and
    [EE-EF][80-BF][80-BF] end in the same two states. Cached, since `a{1000}` copies it 1000 times."""
    by_suffix: dict[tuple[tuple[int, int], ...], int] = {(): 1}
    edges: list[tuple[int, int, int, int]] = []

    def state_for(suffix: tuple[tuple[int, int], ...]) -> int:
        if suffix not in by_suffix:
            target = state_for(suffix[1:])
            by_suffix[suffix] = len(by_suffix) + 1  # 0 is the start, 1 the end
            edges.append((by_suffix[suffix], *suffix[0], target))
        return by_suffix[suffix]

    for lo, hi in ranges:
        for seq in _utf8_sequences(lo, hi):
            edges.append((0, *seq[0], state_for(seq[1:])))
    return len(by_suffix) + 1, tuple(edges)


# ---------------------------------------------------------------------------------------------------
# Thompson construction
# ---------------------------------------------------------------------------------------------------


class _Deadline:
    """Raises RegexTooComplexError once max_seconds have passed since construction."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.end = time.monotonic() + max_seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise RegexTooComplexError(f"regex compilation took more than {self.max_seconds} s (max_seconds)")


class _NFA:
    """Thompson NFA over bytes. State q has epsilon edges eps[q] and byte-range edges edges[q] of
    (lo, hi, target). There is one start and one accepting state."""

    def __init__(self, max_states: int, deadline: _Deadline):
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []
        self.max_states = max_states
        self.deadline = deadline
        self.start = self.accept = -1

    def new_state(self) -> int:
        return self.new_states(1)

    def new_states(self, n: int) -> int:
        """Allocate n consecutive states; return the first."""
        first = len(self.eps)
        if first + n > self.max_states:
            raise RegexTooComplexError(
                f"regex needs more than {self.max_states} NFA states "
                f"({NFA_STATES_PER_DFA_STATE} x max_states); large counted repetitions multiply"
            )
        if first // 4096 != (first + n) // 4096:
            self.deadline.check()
        self.eps.extend([] for _ in range(n))
        self.edges.extend([] for _ in range(n))
        return first

    def build(self, node: _Node) -> tuple[int, int]:
        """A fragment for `node`: (start, end), with no edges leaving `end` yet."""
        if isinstance(node, _Chars):
            return self._chars(node.ranges)
        if isinstance(node, _Concat):
            return self._concat([self.build(item) for item in node.items])
        if isinstance(node, _Alt):
            start, end = self.new_state(), self.new_state()
            for branch in node.branches:
                b_start, b_end = self.build(branch)
                self.eps[start].append(b_start)
                self.eps[b_end].append(end)
            return start, end
        return self._repeat(node)

    def _chars(self, ranges: Ranges) -> tuple[int, int]:
        """One character: a copy of the set's byte-range chains (see _char_chains)."""
        num_states, chains = _char_chains(ranges)
        first = self.new_states(num_states)
        for source, lo, hi, target in chains:
            self.edges[first + source].append((lo, hi, first + target))
        return first, first + 1

    def _concat(self, fragments: list[tuple[int, int]]) -> tuple[int, int]:
        if not fragments:
            q = self.new_state()
            return q, q
        for (_, a_end), (b_start, _) in zip(fragments, fragments[1:]):
            self.eps[a_end].append(b_start)
        return fragments[0][0], fragments[-1][1]

    def _repeat(self, node: _Repeat) -> tuple[int, int]:
        """item{lo,hi}: lo copies, then either a loop (hi None) or hi-lo nested optional copies."""
        required = [self.build(node.item) for _ in range(max(node.lo - (node.hi is None), 0))]
        if node.hi is None:
            loop_start, loop_end = self.build(node.item)
            end = self.new_state()
            self.eps[loop_end] += [loop_start, end]
            if node.lo == 0:  # star: may skip the item entirely
                start = self.new_state()
                self.eps[start] += [loop_start, end]
                loop_start = start
            return self._concat(required + [(loop_start, end)])
        # Optional copies, built inside out: (item (item (item)?)?)?. Every "skip" edge goes straight to
        # the one shared end, so epsilon closures stay small however many copies there are.
        end = self.new_state()
        start = end
        for _ in range(node.hi - node.lo):
            item_start, item_end = self.build(node.item)
            skip = self.new_state()
            self.eps[skip] += [item_start, end]
            self.eps[item_end].append(start)
            start = skip
        return self._concat(required + [(start, end)])


def _build_nfa(node: _Node, max_states: int, deadline: _Deadline) -> _NFA:
    nfa = _NFA(max_states, deadline)
    nfa.start, nfa.accept = nfa.build(node)
    return nfa


# ---------------------------------------------------------------------------------------------------
# Subset construction over byte classes
# ---------------------------------------------------------------------------------------------------


def _byte_classes(nfa: _NFA) -> list[int]:
    """Start bytes of the byte classes: cut 0..255 wherever some NFA edge begins or ends."""
    cuts = {0}
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts.add(lo)
            cuts.add(hi + 1)
    cuts.discard(256)
    return sorted(cuts)


class _SubsetConstruction:
    """DFA rows over byte classes: rows[s][c] = next state; states are frozensets of NFA states that have
    byte edges (or accept), each closed under epsilon edges."""

    def __init__(self, nfa: _NFA, class_starts: list[int], max_states: int, deadline: _Deadline):
        self.nfa = nfa
        self.class_of = [0] * 256
        for c, lo in enumerate(class_starts):
            hi = class_starts[c + 1] if c + 1 < len(class_starts) else 256
            self.class_of[lo:hi] = [c] * (hi - lo)
        self.max_states = max_states
        self.deadline = deadline
        self._closures: dict[int, frozenset[int]] = {}
        self._moves: dict[int, list[tuple[int, int, frozenset[int]]]] = {}

    def closure(self, q: int) -> frozenset[int]:
        """NFA states reachable from q by epsilon edges that matter: those with byte edges, or accept."""
        if q not in self._closures:
            seen, stack, out = {q}, [q], []
            while stack:
                p = stack.pop()
                if self.nfa.edges[p] or p == self.nfa.accept:
                    out.append(p)
                for r in self.nfa.eps[p]:
                    if r not in seen:
                        seen.add(r)
                        stack.append(r)
            self._closures[q] = frozenset(out)
        return self._closures[q]

    def moves(self, q: int) -> list[tuple[int, int, frozenset[int]]]:
        """q's byte edges as (first class, last class, closure of the target)."""
        if q not in self._moves:
            self._moves[q] = [
                (self.class_of[lo], self.class_of[hi], self.closure(t)) for lo, hi, t in self.nfa.edges[q]
            ]
        return self._moves[q]

    def run(self) -> tuple[list[dict[int, int]], set[int]]:
        start = self.closure(self.nfa.start)
        index = {start: 0}
        subsets = [start]
        rows: list[dict[int, int]] = []
        while len(rows) < len(subsets):
            self.deadline.check()
            targets: dict[int, set[int]] = {}
            for q in subsets[len(rows)]:
                for c_lo, c_hi, closure in self.moves(q):
                    for c in range(c_lo, c_hi + 1):
                        targets.setdefault(c, set()).update(closure)
            row = {}
            for c, subset in targets.items():
                key = frozenset(subset)
                if key not in index:
                    if len(subsets) >= self.max_states:
                        raise RegexTooComplexError(
                            f"regex needs more than {self.max_states} DFA states (max_states)"
                        )
                    index[key] = len(subsets)
                    subsets.append(key)
                row[c] = index[key]
            rows.append(row)
        accepting = {s for s, subset in enumerate(subsets) if self.nfa.accept in subset}
        return rows, accepting


# ---------------------------------------------------------------------------------------------------
# Trimming and minimisation
# ---------------------------------------------------------------------------------------------------


def _trim(rows: list[dict[int, int]], accepting: set[int]) -> tuple[list[dict[int, int]], set[int]]:
    """Keep the states that can reach an accepting state (all are reachable from state 0 already);
    renumber them, and drop transitions into the others. State 0 stays state 0."""
    preds: list[list[int]] = [[] for _ in rows]
    for s, row in enumerate(rows):
        for t in row.values():
            preds[t].append(s)
    alive, stack = set(accepting), list(accepting)
    while stack:
        for s in preds[stack.pop()]:
            if s not in alive:
                alive.add(s)
                stack.append(s)
    if 0 not in alive:
        return [], set()
    new_id = {s: i for i, s in enumerate(sorted(alive))}
    new_rows = [{c: new_id[t] for c, t in rows[s].items() if t in alive} for s in sorted(alive)]
    return new_rows, {new_id[s] for s in accepting}


def _minimise(rows: list[dict[int, int]], accepting: set[int], deadline: _Deadline) -> list[int]:
    """Hopcroft's algorithm on the trimmed DFA: the block (class of equivalent states) of every state.

    Start from {accepting, rest} and split blocks until every block is stable: for every block B and
    byte class c, either all or none of its states go into B on c. The worklist holds the blocks still
    to be used as splitters. When a block that is not queued splits, queueing the smaller half is
    enough, because splitting by the parent and by one half also splits by the other half; so each
    state is in a splitter O(log n) times, the O(m log n) bound.

    Missing transitions lead to an implicit dead state. It needs no block of its own in the worklist:
    after trimming it is equivalent to no state (it alone cannot reach acceptance), and a complete
    automaton's initial blocks may all be queued but one, here the dead state's.
    """
    preds: list[list[tuple[int, int]]] = [[] for _ in rows]  # preds[t] = [(class, source), ...]
    for s, row in enumerate(rows):
        for c, t in row.items():
            preds[t].append((c, s))
    blocks = [members for members in (set(accepting), set(range(len(rows))) - accepting) if members]
    block_of = [0] * len(rows)
    for b, members in enumerate(blocks):
        for s in members:
            block_of[s] = b
    work, queued = deque(range(len(blocks))), set(range(len(blocks)))
    while work:
        deadline.check()
        splitter = work.popleft()
        queued.discard(splitter)
        sources_by_class: dict[int, list[int]] = {}
        for t in blocks[splitter]:
            for c, s in preds[t]:
                sources_by_class.setdefault(c, []).append(s)
        for sources in sources_by_class.values():
            hit: dict[int, list[int]] = {}
            for s in sources:
                hit.setdefault(block_of[s], []).append(s)
            for b, members in hit.items():
                if len(members) < len(blocks[b]):
                    _split(blocks, block_of, b, members, work, queued)
    return block_of


def _split(
    blocks: list[set[int]],
    block_of: list[int],
    b: int,
    members: list[int],
    work: deque[int],
    queued: set[int],
) -> None:
    """Move `members` out of block b into a new block and queue what Hopcroft's rule asks for."""
    new = len(blocks)
    blocks.append(set(members))
    blocks[b].difference_update(members)
    for s in members:
        block_of[s] = new
    if b in queued or len(members) <= len(blocks[b]):
        work.append(new)
        queued.add(new)
    else:
        work.append(b)
        queued.add(b)


def _quotient(
    rows: list[dict[int, int]], accepting: set[int], block_of: list[int]
) -> tuple[list[dict[int, int]], set[int]]:
    """The DFA over blocks, numbered breadth-first from state 0's block, classes (bytes) ascending."""
    representative: dict[int, int] = {}
    for s, b in enumerate(block_of):
        representative.setdefault(b, s)
    number = {block_of[0]: 0}
    order = [block_of[0]]
    out_rows: list[dict[int, int]] = []
    for b in order:  # grows while we iterate: breadth-first
        row = {}
        for c, t in sorted(rows[representative[b]].items()):
            tb = block_of[t]
            if tb not in number:
                number[tb] = len(order)
                order.append(tb)
            row[c] = number[tb]
        out_rows.append(row)
    return out_rows, {number[block_of[s]] for s in accepting}


# ---------------------------------------------------------------------------------------------------
# The DFA
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class DFA:
    """A minimal, trimmed DFA over UTF-8 bytes.

    transitions[state] maps a byte (0..255) to the next state. Every state is reachable from `initial`
    and can reach an accepting state, so a byte missing from the map means the text can no longer match.
    Compiled DFAs are cached and shared: treat them, transitions included, as read-only.
    """

    pattern: str
    initial: int
    accepting: frozenset[int]
    transitions: tuple[dict[int, int], ...]

    @property
    def num_states(self) -> int:
        return len(self.transitions)

    def step(self, state: int, byte: int) -> int | None:
        """The state after one byte, or None if the text can no longer match."""
        return self.transitions[state].get(byte)

    def walk(self, state: int, data: bytes) -> int | None:
        """The state after all of `data`, or None as soon as a byte leads nowhere."""
        transitions = self.transitions
        for byte in data:
            state = transitions[state].get(byte)
            if state is None:
                return None
        return state

    def is_accepting(self, state: int) -> bool:
        return state in self.accepting

    def accepts(self, text: str | bytes) -> bool:
        """Full match of `text` (a str is UTF-8 encoded first; a lone surrogate never matches)."""
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        state = self.walk(self.initial, data)
        return state is not None and state in self.accepting

    def __repr__(self) -> str:
        return f"DFA({self.pattern!r}, num_states={self.num_states}, accepting={len(self.accepting)})"


def compile_regex(pattern: str, *, max_states: int = 20_000, max_seconds: float = 10.0) -> DFA:
    """Compile `pattern` (Python re syntax, full match, ASCII classes) into a minimal DFA over bytes.

    Raises RegexSyntaxError for malformed or unsupported syntax, RegexTooComplexError when the DFA would
    need more than max_states states (or the NFA more than 10x that) or compiling takes more than
    max_seconds, and RegexError when the pattern matches nothing. Results are cached.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
    return _compile_cached(pattern, max_states, max_seconds)


@functools.lru_cache(maxsize=64)
def _compile_cached(pattern: str, max_states: int, max_seconds: float) -> DFA:
    deadline = _Deadline(max_seconds)
    ast = _Parser(pattern).parse()
    nfa = _build_nfa(ast, NFA_STATES_PER_DFA_STATE * max_states, deadline)
    class_starts = _byte_classes(nfa)
    rows, accepting = _SubsetConstruction(nfa, class_starts, max_states, deadline).run()
    rows, accepting = _trim(rows, accepting)
    if not rows:
        raise RegexError(f"pattern {pattern!r} matches nothing")
    block_of = _minimise(rows, accepting, deadline)
    rows, accepting = _quotient(rows, accepting, block_of)
    transitions = _spell_out_bytes(rows, class_starts)
    return DFA(pattern=pattern, initial=0, accepting=frozenset(accepting), transitions=transitions)


def _spell_out_bytes(rows: list[dict[int, int]], class_starts: list[int]) -> tuple[dict[int, int], ...]:
    """Rows over byte classes -> rows over bytes: a class's target for each of its bytes."""
    class_ends = class_starts[1:] + [256]
    transitions = []
    for row in rows:
        byte_row: dict[int, int] = {}
        for c, t in row.items():
            byte_row.update(dict.fromkeys(range(class_starts[c], class_ends[c]), t))
        transitions.append(byte_row)
    return tuple(transitions)
