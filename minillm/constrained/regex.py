"""Chapter 5: a regex engine that compiles a pattern into a minimal DFA over UTF-8 bytes.

Constrained decoding asks, after every token, "which next tokens keep the output a prefix of some string
the regex accepts?". A DFA answers that in one table look-up per byte, so we compile once and walk it
many times. The pipeline is the textbook one, in two modules beside this one:

1. Parse the pattern (Python `re` syntax, full-match semantics) into a small AST of character sets,
   concatenations, alternations and counted repetitions (regex_parser.py: parse).
2. Thompson construction: every AST node becomes an NFA fragment over bytes, glued by epsilon edges
   (automata.py: build_nfa; character sets become UTF-8 byte-range chains).
3. Subset construction over byte classes: a DFA state is a set of NFA states, discovered breadth-first
   (automata.py: byte_classes, SubsetConstruction).
4. Trimming: drop states that can no longer reach acceptance, so a missing transition means "dead"
   (automata.py: trim).
5. Minimisation (Hopcroft's partition refinement), numbered breadth-first from the initial state with
   bytes in ascending order, so numbering is deterministic (automata.py: minimise, quotient).

Why bytes and not characters? Tokenizers cut text into byte strings, and a token may end in the middle
of a multi-byte character; an automaton over bytes walks any token without decoding it.

Limits: `(a|b)*a(a|b){20}` needs 2**21 DFA states, and nested counted repetitions multiply NFA size.
compile_regex raises RegexTooComplexError past max_states DFA states (10x that for the NFA) or past
max_seconds, instead of running out of memory or time. DFA.stats counts the work done (NFA states,
subsets, clock reads).

Supported syntax (regex_parser.py): literals and escapes, classes, `.`, \\d \\w \\s and negations (ASCII
meaning, as `re.ASCII`), `* + ? {m} {m,} {,n} {m,n}` and their lazy forms, `|`, groups, `(?#...)`, and
`^` / `$` at the very start / end. Lookarounds, backreferences, word boundaries and the like raise
RegexSyntaxError naming the construct.

Checked by: pytest -m ch5 (hypothesis against Python's re.fullmatch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from minillm.constrained.automata import (
    NFA_STATES_PER_DFA_STATE,
    Budget,
    CompileStats,
    RegexTooComplexError,
    SubsetConstruction,
    build_nfa,
    byte_classes,
    minimise,
    quotient,
    spell_out_bytes,
    trim,
)
from minillm.constrained.regex_parser import RegexError, RegexSyntaxError, parse

__all__ = ["DFA", "CompileStats", "RegexError", "RegexSyntaxError", "RegexTooComplexError", "compile_regex"]


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
    stats: CompileStats | None = None  # the work compile_regex did to build it

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
    budget = Budget(max_seconds)
    ast = parse(pattern)
    nfa = build_nfa(ast, NFA_STATES_PER_DFA_STATE * max_states, budget)
    class_starts = byte_classes(nfa)
    rows, accepting = SubsetConstruction(nfa, class_starts, max_states, budget).run()
    rows, accepting = trim(rows, accepting)
    if not rows:
        raise RegexError(f"pattern {pattern!r} matches nothing")
    block_of = minimise(rows, accepting, budget)
    rows, accepting = quotient(rows, accepting, block_of)
    budget.stats.dfa_states = len(rows)
    transitions = spell_out_bytes(rows, class_starts)
    return DFA(
        pattern=pattern,
        initial=0,
        accepting=frozenset(accepting),
        transitions=transitions,
        stats=budget.stats,
    )
