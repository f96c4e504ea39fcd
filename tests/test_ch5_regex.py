"""Chapter 5: the regex -> minimal byte DFA compiler. The oracle is Python's re.fullmatch(pattern, s,
re.ASCII): random patterns (literals from a small alphabet with 1- to 4-byte UTF-8 characters, classes,
negated classes, dot, shorthands, quantifiers, alternation, groups) are checked against random strings,
strings generated to match, and mutations of those. Unit tests cover each construct, Unicode at the UTF-8
length boundaries, the DFA invariants (trimmed, minimal, breadth-first numbering) and the errors."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm.constrained import (
    DFA,
    RegexError,
    RegexSyntaxError,
    RegexTooComplexError,
    automata,
    compile_regex,
)

pytestmark = pytest.mark.ch5

ALPHABET = "ab1 \n-é€😀"  # ASCII letters, digit, space, newline, a class metachar, 2-, 3- and 4-byte chars
RANGE_ENDS = ALPHABET.replace("😀", "")  # ranges up to 😀 make from_regex slow; other tests cover them
UTF8_CHARS = st.characters(codec="utf-8")  # no lone surrogates: they have no UTF-8 encoding
STRINGS_PER_PATTERN = 10  # 3 generated matches, 3 mutations of them, 4 random strings
RANDOM_PATTERNS = 2_000  # x STRINGS_PER_PATTERN = 20,000 checks against re


def agrees(dfa: DFA, pattern: str, text: str) -> bool:
    return dfa.accepts(text) == bool(re.fullmatch(pattern, text, re.ASCII))


# ---------------------------------------------------------------------------------------------------
# Random patterns: strategies return (pattern text, kind); kind says whether it needs a group before a
# quantifier ("atom" does not) or inside a concatenation ("alt" does).
# ---------------------------------------------------------------------------------------------------


@st.composite
def char_text(draw, in_class: bool = False) -> str:
    """One alphabet character, spelled raw, escaped, or as a \\x / \\u / \\U escape."""
    c = draw(st.sampled_from(ALPHABET))
    spellings = [f"\\U{ord(c):08x}", re.escape(c)]
    if ord(c) < 0x10000:
        spellings.append(f"\\u{ord(c):04x}")
    if ord(c) < 0x100:
        spellings.append(f"\\x{ord(c):02x}")
    metachars = "\\]^-" if in_class else "\\.^$*+?{}[]|()"
    if c not in metachars:
        spellings.append(c)
    return draw(st.sampled_from(spellings))


@st.composite
def char_class(draw) -> tuple[str, str]:
    negate = draw(st.booleans())
    # Negated classes get only positive shorthands, so that no class is empty (e.g. [^\w\W]).
    shorthands = ["\\d", "\\w", "\\s"] + ([] if negate else ["\\D", "\\W", "\\S"])
    items = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["char", "range", "shorthand"]))
        if kind == "shorthand":
            items.append(draw(st.sampled_from(shorthands)))
        elif kind == "range":
            lo, hi = sorted(draw(st.lists(st.sampled_from(RANGE_ENDS), min_size=2, max_size=2)))
            items.append(re.escape(lo) + "-" + re.escape(hi))
        else:
            items.append(draw(char_text(in_class=True)))
    return "[" + ("^" if negate else "") + "".join(items) + "]", "atom"


LEAVES = st.one_of(
    char_text().map(lambda t: (t, "atom")),
    char_class(),
    st.sampled_from(["\\d", "\\w", "\\s", "\\D", "\\W", "\\S", "."]).map(lambda t: (t, "atom")),
)
QUANTIFIERS = ["*", "+", "?", "{2}", "{0}", "{1,}", "{0,2}", "{1,3}", "{,2}", "{2,3}"]


def group(text: str) -> str:
    return f"(?:{text})"


def extend(children):
    concat = st.lists(children, min_size=2, max_size=3).map(
        lambda items: ("".join(group(t) if k == "alt" else t for t, k in items), "concat")
    )
    alternation = st.lists(st.one_of(children, st.just(("", "concat"))), min_size=2, max_size=3).map(
        lambda items: ("|".join(t for t, _ in items), "alt")
    )
    groups = st.tuples(children, st.sampled_from(["(", "(?:", "(?P<g>"])).map(
        lambda c: (f"{c[1]}{c[0][0]})", "atom")
    )
    repeat = st.tuples(children, st.sampled_from(QUANTIFIERS), st.sampled_from(["", "?"])).map(
        lambda c: ((c[0][0] if c[0][1] == "atom" else group(c[0][0])) + c[1] + c[2], "repeat")
    )
    return st.one_of(concat, alternation, groups, repeat)


def name_groups(pattern: str) -> str:
    """Give each (?P<g> a unique name."""
    counter = iter(range(1_000))
    return re.sub(r"\(\?P<g>", lambda _: f"(?P<g{next(counter)}>", pattern)


PATTERNS = st.recursive(LEAVES, extend, max_leaves=10).map(lambda pk: name_groups(pk[0]))


def mutate(text: str, rng: random.Random) -> str:
    """Insert, delete, replace or duplicate one character, or truncate (long strings always truncate,
    which also keeps re's backtracking short)."""
    if len(text) > 12:
        return text[: rng.randrange(13)]
    i = rng.randrange(len(text) + 1)
    op = rng.choice(["insert", "delete", "replace", "duplicate"] if text else ["insert"])
    if op == "insert":
        return text[:i] + rng.choice(ALPHABET) + text[i:]
    i = min(i, len(text) - 1)
    if op == "delete":
        return text[:i] + text[i + 1 :]
    if op == "replace":
        return text[:i] + rng.choice(ALPHABET) + text[i + 1 :]
    return text[: i + 1] + text[i:]


@settings(
    max_examples=RANDOM_PATTERNS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pattern=PATTERNS, data=st.data())
def test_random_patterns_agree_with_re(pattern, data):
    dfa = compile_regex(pattern)
    matcher = st.from_regex(re.compile(pattern, re.ASCII), fullmatch=True, alphabet=UTF8_CHARS)
    rng = data.draw(st.randoms(use_true_random=False))
    matches = [data.draw(matcher) for _ in range(3)]
    randoms = ["".join(rng.choices(ALPHABET, k=rng.randrange(9))) for _ in range(4)]
    texts = matches + [mutate(m, rng) for m in matches] + randoms
    assert len(texts) == STRINGS_PER_PATTERN
    for m in matches:
        assert dfa.accepts(m), (pattern, m)
    for text in texts:
        assert agrees(dfa, pattern, text), (pattern, text, dfa.accepts(text))


# ---------------------------------------------------------------------------------------------------
# DFA invariants, checked with deliberately naive algorithms
# ---------------------------------------------------------------------------------------------------


def bfs_order(dfa: DFA) -> list[int]:
    order, seen = [dfa.initial], {dfa.initial}
    for s in order:
        for byte in sorted(dfa.transitions[s]):
            t = dfa.transitions[s][byte]
            if t not in seen:
                seen.add(t)
                order.append(t)
    return order


def co_reachable(dfa: DFA) -> set[int]:
    alive = set(dfa.accepting)
    changed = True
    while changed:
        changed = False
        for s, row in enumerate(dfa.transitions):
            if s not in alive and any(t in alive for t in row.values()):
                alive.add(s)
                changed = True
    return alive


def moore_classes(dfa: DFA) -> int:
    """Number of distinguishable states by Moore's refinement over all 256 bytes (dead = -1)."""
    label = [int(s in dfa.accepting) for s in range(dfa.num_states)]
    while True:
        sigs = [
            (label[s], tuple(label[t] if (t := row.get(b)) is not None else -1 for b in range(256)))
            for s, row in enumerate(dfa.transitions)
        ]
        ids = {sig: i for i, sig in enumerate(dict.fromkeys(sigs))}
        new = [ids[sig] for sig in sigs]
        if len(ids) == len(set(label)):
            return len(ids)
        label = new


def check_invariants(dfa: DFA) -> None:
    assert dfa.initial == 0
    assert bfs_order(dfa) == list(range(dfa.num_states)), "states reachable and numbered breadth-first"
    assert co_reachable(dfa) == set(range(dfa.num_states)), "every state can still reach acceptance"
    assert moore_classes(dfa) == dfa.num_states, "no two states are equivalent"
    assert all(0 <= b < 256 and 0 <= t < dfa.num_states for row in dfa.transitions for b, t in row.items())


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(pattern=PATTERNS)
def test_random_patterns_give_trimmed_minimal_bfs_numbered_dfas(pattern):
    check_invariants(compile_regex(pattern))


@pytest.mark.parametrize(
    "pattern",
    [
        r"[a-z]+@[a-z]+\.(com|org)",
        r"(ab|a)(bc|c)*",
        r".{0,3}é",
        r"[^a]*",
        r"\d{1,3}(\.\d{1,3}){3}",
        r"(a|b)*a(a|b){2}",
    ],
)
def test_invariants_on_fixed_patterns(pattern):
    check_invariants(compile_regex(pattern))


def test_equivalent_patterns_give_the_same_minimal_dfa():
    one = compile_regex("a*")
    assert one.num_states == 1 and one.accepting == frozenset({0}) and one.transitions == ({97: 0},)
    for pattern in [r"(a|a)*", r"(a*)*", r"a*a*", r"(?:a+)?", r"(a{0,2})*"]:
        assert compile_regex(pattern).transitions == one.transitions, pattern


def test_numbering_is_deterministic():
    from minillm.constrained.regex import _compile_cached

    first = compile_regex(r"(x|yz)+[0-9]?")
    _compile_cached.cache_clear()
    second = compile_regex(r"(x|yz)+[0-9]?")
    assert first is not second
    assert first.transitions == second.transitions and first.accepting == second.accepting


def test_compiled_dfas_are_cached():
    assert compile_regex("cached+") is compile_regex("cached+")


# ---------------------------------------------------------------------------------------------------
# Constructs
# ---------------------------------------------------------------------------------------------------

CONSTRUCTS = [
    # (pattern, accepted, rejected)
    ("abc", ["abc"], ["", "ab", "abcd", "abd"]),
    (r"a\.b\\c", ["a.b\\c"], ["axb\\c"]),
    (r"\n\t\r\f\v\a", ["\n\t\r\f\v\a"], ["ntrfva"]),
    (r"\x41\u00e9\U0001F600\0\101", ["Aé😀\x00A"], ["A"]),
    (r"\N{EURO SIGN}", ["€"], ["E"]),
    (r"\*\+\?\(\)\[\]\{\}\|\^\$\-\ \é", ["*+?()[]{}|^$- é"], [""]),
    ("[abc]", ["a", "b", "c"], ["d", "", "ab"]),
    ("[a-cx-z]", ["b", "y"], ["d", "w"]),
    ("[^a-c]", ["d", "€", "\n"], ["a", "c", ""]),
    ("[]a]", ["]", "a"], ["b"]),
    ("[^]a]", ["b"], ["]", "a"]),
    ("[-a]", ["-", "a"], ["b"]),
    ("[a-]", ["-", "a"], ["b"]),
    (r"[\]\\\-\n]", ["]", "\\", "-", "\n"], ["n"]),
    (r"[\x00-\x1f]", ["\x00", "\x1f"], [" "]),
    (r"[\b]", ["\b"], ["b"]),
    (r"[\d_]", ["5", "_"], ["a"]),
    (r"[^\W\d]", ["a", "_"], ["5", "-", "é"]),
    (".", ["a", "é", "😀", "\r"], ["\n", "", "ab"]),
    (r"\d", ["0", "9"], ["a", "٣"]),  # ASCII digits only (re.ASCII)
    (r"\w", ["a", "Z", "0", "_"], ["-", "é"]),
    (r"\s", [" ", "\t", "\n", "\r", "\f", "\v"], ["a", "\u00a0"]),
    (r"\D", ["a", "٣", "😀"], ["5"]),
    (r"\W", ["-", "é", "€"], ["a", "_"]),
    (r"\S", ["a", "€"], [" ", "\n"]),
    ("a*", ["", "a", "aaaa"], ["b"]),
    ("a+", ["a", "aaa"], [""]),
    ("a?", ["", "a"], ["aa"]),
    ("a{3}", ["aaa"], ["aa", "aaaa"]),
    ("a{2,}", ["aa", "aaaaa"], ["a"]),
    ("a{1,3}", ["a", "aaa"], ["", "aaaa"]),
    ("a{,2}", ["", "aa"], ["aaa"]),
    ("a{,}", ["", "aaa"], ["b"]),
    ("a{0}b", ["b"], ["ab"]),
    ("a*?b+?c??d{1,2}?", ["bd", "aabbcdd"], ["ad"]),
    ("a|b|", ["a", "b", ""], ["ab"]),
    ("|a", ["", "a"], ["b"]),
    ("(ab|cd)+", ["ab", "abcd"], ["", "abc"]),
    ("(?:ab)*c", ["c", "ababc"], ["abab"]),
    ("(?P<first>a)(?P<second>b)", ["ab"], ["a"]),
    ("a(?#a comment)b", ["ab"], ["a(?#a comment)b"]),
    ("^ab$", ["ab"], ["^ab$", "ab\n"]),
    ("^$", [""], ["\n"]),
    ("a{", ["a{"], ["a"]),
    ("a{x}", ["a{x}"], ["a"]),
    ("a{}", ["a{}"], [""]),
    ("a{1,2", ["a{1,2"], ["a"]),
    ("a{ 1}", ["a{ 1}"], ["a"]),
    ("{", ["{"], [""]),
    ("()", [""], ["()"]),
]


@pytest.mark.parametrize("pattern,accepted,rejected", CONSTRUCTS)
def test_construct(pattern, accepted, rejected):
    dfa = compile_regex(pattern)
    for text in accepted + rejected:
        assert bool(re.fullmatch(pattern, text, re.ASCII)) == (text in accepted), "table disagrees with re"
        assert dfa.accepts(text) == (text in accepted), (pattern, text)


# ---------------------------------------------------------------------------------------------------
# Unicode over bytes
# ---------------------------------------------------------------------------------------------------

BOUNDARIES = [0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF]


def test_multibyte_literal_is_walked_byte_by_byte():
    dfa = compile_regex("€uro")
    assert dfa.accepts("€uro") and dfa.accepts("€uro".encode())
    middle = dfa.walk(dfa.initial, b"\xe2\x82")  # a token may end inside a character
    assert middle is not None and not dfa.is_accepting(middle)
    assert dfa.step(middle, 0xAC) is not None and dfa.step(middle, 0xAD) is None
    assert dfa.walk(dfa.initial, b"\xe2\x83") is None


@pytest.mark.parametrize("lo,hi", [(a, b) for a in BOUNDARIES for b in BOUNDARIES if a <= b])
def test_class_ranges_across_utf8_length_boundaries(lo, hi):
    pattern = f"[\\U{lo:08x}-\\U{hi:08x}]"
    if 0xD800 <= lo and hi <= 0xDFFF:  # only surrogates: no UTF-8 string matches
        with pytest.raises(RegexError, match="matches nothing"):
            compile_regex(pattern)
        return
    dfa = compile_regex(pattern)
    full = (lo, hi) == (0, 0x10FFFF)  # its negation is empty: see test_empty_language_is_an_error
    negated = None if full else compile_regex(f"[^{pattern[1:]}")
    probes = {p + d for p in BOUNDARIES for d in (-1, 0, 1)} | {lo, hi, (lo + hi) // 2}
    for cp in sorted(probes):
        if 0 <= cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF:
            assert dfa.accepts(chr(cp)) == (lo <= cp <= hi), hex(cp)
            assert full or negated.accepts(chr(cp)) == (not lo <= cp <= hi), hex(cp)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.integers(0, 0x10FFFF), min_size=2, max_size=2).map(sorted), st.lists(UTF8_CHARS, max_size=20)
)
def test_random_class_ranges(bounds, probes):
    lo, hi = bounds
    pattern = f"[\\U{lo:08x}-\\U{hi:08x}]"
    if 0xD800 <= lo and hi <= 0xDFFF:  # only surrogates: no UTF-8 string matches
        with pytest.raises(RegexError, match="matches nothing"):
            compile_regex(pattern)
        return
    dfa = compile_regex(pattern)
    ends = [chr(b) for b in (lo, hi) if not 0xD800 <= b <= 0xDFFF]  # a lone surrogate is not UTF-8
    for c in probes + ends:
        assert agrees(dfa, pattern, c), (pattern, c)


def test_negated_class_and_dot_match_multibyte_characters():
    for pattern in ["[^a]", ".", r"\W", r"[^\x00-\x7f]"]:
        dfa = compile_regex(pattern)
        for c in ["é", "€", "😀", "\U0010ffff"]:
            assert dfa.accepts(c), (pattern, c)
    assert compile_regex(".").num_states < 12  # a few byte-range chains, not a million characters


def test_invalid_utf8_and_lone_surrogates_never_match():
    dfa = compile_regex(".*")
    assert dfa.accepts("a😀") and not dfa.accepts("\ud800") and not dfa.accepts(b"\xff")
    assert not dfa.accepts(b"\xc0\x80")  # overlong encoding of NUL
    assert not dfa.accepts(b"\xed\xa0\x80")  # CESU-style surrogate
    assert not dfa.accepts(b"\xe2\x82")  # truncated


def test_empty_language_is_an_error():
    with pytest.raises(RegexError, match="matches nothing") as info:
        compile_regex(r"[^\x00-\U0010FFFF]")
    assert not isinstance(info.value, RegexSyntaxError)
    with pytest.raises(RegexError, match="matches nothing"):
        compile_regex(r"a\ud800")


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------

UNSUPPORTED = [
    (r"(a)\1", "backreference \\1 at position 3"),
    (r"(?P<x>a)(?P=x)", "backreference (?P=name)"),
    (r"a(?=b)", "lookahead"),
    (r"a(?!b)", "negative lookahead"),
    (r"(?<=a)b", "lookbehind"),
    (r"(?<!a)b", "negative lookbehind"),
    (r"(?>a)", "atomic group"),
    (r"a*+", "possessive quantifier"),
    (r"a{1,2}+", "possessive quantifier"),
    (r"(?i)a", "inline flags"),
    (r"(?i:a)", "inline flags"),
    (r"(a)?(?(1)b|c)", "conditional"),
    (r"a\bb", "\\b word boundary"),
    (r"a\B", "\\B word boundary"),
    (r"\Aa", "\\A/\\Z anchors"),
    (r"a\Z", "\\A/\\Z anchors"),
    (r"a^b", "anchor ^"),
    (r"a$b", "anchor $"),
    (r"(a$)", "anchor $"),
]

MALFORMED = [
    ("(ab", "missing ), unterminated subpattern at position 0"),
    ("ab)", "unbalanced parenthesis at position 2"),
    ("*a", "nothing to repeat at position 0"),
    ("a|+", "nothing to repeat at position 2"),
    ("(?:?)", "nothing to repeat"),
    ("{1}", "nothing to repeat"),
    ("a**", "multiple repeat at position 2"),
    ("a{1}{2}", "multiple repeat"),
    ("[z-a]", "bad character range z-a at position 1"),
    (r"[\d-z]", "bad character range"),
    ("a{5,2}", "min greater than max"),
    ("[abc", "unterminated character set at position 0"),
    ("a\\", "bad escape (end of pattern)"),
    (r"\q", "bad escape \\q"),
    (r"\x4", "incomplete escape"),
    (r"\u12", "incomplete escape"),
    (r"\N{NO SUCH CHARACTER}", "undefined character name"),
    (r"\777", "octal escape"),
    (r"[\8]", "bad escape"),
    ("(?P<1>a)", "bad group name"),
    ("(?P<x>a)(?P<x>b)", "redefinition of group name"),
    ("(?<x>a)", "unknown extension"),
]


@pytest.mark.parametrize("pattern,message", UNSUPPORTED)
def test_unsupported_constructs_are_named(pattern, message):
    with pytest.raises(RegexSyntaxError, match=re.escape(message)) as info:
        compile_regex(pattern)
    assert "not supported" in str(info.value)


@pytest.mark.parametrize("pattern,message", MALFORMED)
def test_malformed_patterns(pattern, message):
    with pytest.raises(RegexSyntaxError, match=re.escape(message)):
        compile_regex(pattern)
    with pytest.raises(re.error):  # Python agrees that the pattern is invalid
        re.compile(pattern)


def test_huge_repetition_count():
    with pytest.raises(RegexSyntaxError, match="too large"):
        compile_regex("a{99999999999}")


def test_errors_are_value_errors():
    assert issubclass(RegexSyntaxError, RegexError) and issubclass(RegexTooComplexError, RegexError)
    assert issubclass(RegexError, ValueError)
    with pytest.raises(TypeError):
        compile_regex(b"abc")


# ---------------------------------------------------------------------------------------------------
# Size and time limits, and the work a compile does (DFA.stats: counted, never timed)
# ---------------------------------------------------------------------------------------------------


def test_exploding_pattern_hits_max_states():
    with pytest.raises(RegexTooComplexError, match=r"more than 20000 DFA states \(max_states\)"):
        compile_regex("(a|b)*a(a|b){20}")
    assert compile_regex("(a|b)*a(a|b){5}", max_states=100).num_states == 64
    with pytest.raises(RegexTooComplexError, match="max_states"):
        compile_regex("(a|b)*a(a|b){5}", max_states=50)


def test_nfa_size_is_bounded():
    with pytest.raises(RegexTooComplexError, match="NFA states"):
        compile_regex("(?:a{1000}){1000}", max_states=1_000)


def test_slow_pattern_hits_max_seconds(monkeypatch):
    """A pattern whose subset construction runs long gives up at max_seconds. The clock is a counter
    here (one second per look), so the test does not depend on the machine's speed: the compiler must
    look at the clock as it works and stop at the first look past the deadline."""
    looks = itertools.count()
    monkeypatch.setattr(automata, "clock", lambda: next(looks))
    with pytest.raises(RegexTooComplexError, match="max_seconds") as info:
        compile_regex(r"(\w{1,50}){1,50}", max_seconds=20)
    work = info.value.stats
    assert work.clock_reads == 21  # the 21st look is past the deadline (the clock read 0 at the start)
    assert work.nfa_states == 7550  # the NFA was complete (one look, at 4096 states)...
    assert work.subset_states <= work.clock_reads  # ...and a look came with every DFA row after it
    assert work.dfa_states == 0  # never got to minimisation


def test_large_counted_repetition_is_linear():
    """b{1000}: two NFA states and one subset per copy; no blow-up in the subset construction."""
    dfa = compile_regex("b{1000}")
    assert dfa.num_states == 1001 and dfa.accepts("b" * 1000) and not dfa.accepts("b" * 999)
    assert dfa.stats.nfa_states <= 2 * 1000 + 1 and dfa.stats.subset_states == dfa.num_states == 1001
    dots = compile_regex(".{0,300}")
    assert dots.accepts("😀" * 300)
    assert dots.stats.subset_states == dots.num_states <= 8 * 301  # a few byte-range states per character


JSON_STRING = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'


def test_json_string_pattern_agrees_with_re():
    dfa = compile_regex(JSON_STRING)
    check_invariants(dfa)
    texts = ['""', '"abc"', '"a\\"b"', '"€😀"', '"\\u00e9"', '"\\u00g9"', '"\n"', '"\\x"', '"a', 'a"', '"\\"']
    rng = random.Random(0)
    pieces = ['"', "\\", "u", "0", "f", "a", "\x1f", "é", "😀", "n", " "]
    texts += ['"' + "".join(rng.choices(pieces, k=rng.randrange(8))) + '"' for _ in range(2_000)]
    for text in texts:
        assert agrees(dfa, JSON_STRING, text), text


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.from_regex(re.compile(JSON_STRING, re.ASCII), fullmatch=True, alphabet=UTF8_CHARS))
def test_json_string_pattern_accepts_generated_strings(text):
    assert compile_regex(JSON_STRING).accepts(text)


def test_bounded_json_string_compiles_in_linear_work():
    """A JSON string of at most n characters: NFA states, subsets and DFA states all grow linearly in n
    (twice n, twice the work), and the subset construction builds no state that minimisation merges."""
    dfas = {n: compile_regex(JSON_STRING[:-2] + f"{{0,{n}}}" + '"') for n in (100, 200)}
    dfa = dfas[200]
    assert dfa.accepts('"' + "é" * 200 + '"') and not dfa.accepts('"' + "é" * 201 + '"')
    small, big = dfas[100].stats, dfa.stats
    assert big.subset_states == big.dfa_states == dfa.num_states <= 13 * 201
    for count in ("nfa_states", "subset_states"):
        assert getattr(big, count) <= 2 * getattr(small, count) + 10, count
