"""Chapter 5: the automata behind compile_regex: a parsed regex (minillm/constrained/regex_parser.py)
becomes a Thompson NFA over bytes, then a DFA by subset construction, trimmed and minimised.

1. UTF-8. Tokenizers cut text into byte strings, and a token may end in the middle of a multi-byte
   character ("€" is E2 82 AC, and a BPE token can hold just E2 82), so the automata run over bytes. A
   character set becomes UTF-8 byte-range sequences: [\\u0080-\\u07FF] is [C2-DF][80-BF], and a negated
   class such as [^"] is a handful of such sequences instead of a million code points.
2. Thompson construction: every AST node becomes an NFA fragment with one start and one end state,
   glued together by epsilon (empty) edges. `a{3}` is three copies of `a`'s fragment, `a{0,3}` nests
   optional copies `(a(a(a)?)?)?` so that epsilon closures stay small.
3. Subset construction: a DFA state is the set of NFA states the NFA could be in (closed under epsilon
   edges). States are discovered breadth-first, so only reachable subsets are ever built. To stay fast
   the alphabet is first cut into byte classes, maximal byte intervals that every NFA edge treats alike
   (often a few dozen); determinisation and minimisation run over classes, and only the final DFA
   spells out one entry per byte.
4. Trimming: drop DFA states from which no accepting state can be reached. A missing transition then
   means "dead": the text can no longer match, whatever follows.
5. Minimisation (Hopcroft's partition refinement): merge states that accept exactly the same
   continuations, then number the blocks breadth-first from the initial state, bytes ascending.

Every stage counts its work in a Budget's CompileStats and checks the clock after each bounded piece
of work (a DFA row, a Hopcroft splitter, 4096 NFA states), so max_states and max_seconds stop a pattern
that explodes, such as `(a|b)*a(a|b){20}` (2**21 DFA states).

Checked by: pytest -m ch5 tests/test_ch5_regex.py (invariants of the DFAs, size and work bounds).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from dataclasses import dataclass

from minillm.constrained.regex_parser import Alt, Chars, Concat, Node, Ranges, RegexError, Repeat

NFA_STATES_PER_DFA_STATE = 10  # the NFA may hold this many times max_states before we give up
clock = time.monotonic  # the clock max_seconds is measured on (a test replaces it with a counter)


class RegexTooComplexError(RegexError):
    """The automaton would exceed max_states or construction would exceed max_seconds. `stats`: the
    work done until then (CompileStats)."""

    def __init__(self, message: str, stats: CompileStats | None = None):
        super().__init__(message)
        self.stats = stats


@dataclass
class CompileStats:
    """The work of one compile, counted as it goes. Tests bound these counts, not wall-clock time; a
    RegexTooComplexError carries them as far as they got."""

    nfa_states: int = 0  # Thompson NFA states allocated
    subset_states: int = 0  # DFA states the subset construction found (before trimming and minimising)
    clock_reads: int = 0  # looks at the clock: one per DFA row, per Hopcroft splitter, per 4096 NFA states
    dfa_states: int = 0  # states of the minimal DFA


class Budget:
    """One compile's limits and its CompileStats. check() raises RegexTooComplexError once max_seconds
    have passed since construction; the stages call it after every bounded piece of work."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.stats = CompileStats()
        self.end = clock() + max_seconds

    def check(self) -> None:
        self.stats.clock_reads += 1
        if clock() > self.end:
            raise RegexTooComplexError(
                f"regex compilation took more than {self.max_seconds} s (max_seconds)", self.stats
            )


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


class NFA:
    """Thompson NFA over bytes. State q has epsilon edges eps[q] and byte-range edges edges[q] of
    (lo, hi, target). There is one start and one accepting state."""

    def __init__(self, max_states: int, budget: Budget):
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []
        self.max_states = max_states
        self.budget = budget
        self.start = self.accept = -1

    def new_state(self) -> int:
        return self.new_states(1)

    def new_states(self, n: int) -> int:
        """Allocate n consecutive states; return the first."""
        first = len(self.eps)
        if first + n > self.max_states:
            raise RegexTooComplexError(
                f"regex needs more than {self.max_states} NFA states "
                f"({NFA_STATES_PER_DFA_STATE} x max_states); large counted repetitions multiply",
                self.budget.stats,
            )
        if first // 4096 != (first + n) // 4096:
            self.budget.check()
        self.eps.extend([] for _ in range(n))
        self.edges.extend([] for _ in range(n))
        self.budget.stats.nfa_states = first + n
        return first

    def build(self, node: Node) -> tuple[int, int]:
        """A fragment for `node`: (start, end), with no edges leaving `end` yet."""
        if isinstance(node, Chars):
            return self._chars(node.ranges)
        if isinstance(node, Concat):
            return self._concat([self.build(item) for item in node.items])
        if isinstance(node, Alt):
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

    def _repeat(self, node: Repeat) -> tuple[int, int]:
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


def build_nfa(node: Node, max_states: int, budget: Budget) -> NFA:
    """Thompson's construction of `node`, at most max_states NFA states."""
    nfa = NFA(max_states, budget)
    nfa.start, nfa.accept = nfa.build(node)
    return nfa


# ---------------------------------------------------------------------------------------------------
# Subset construction over byte classes
# ---------------------------------------------------------------------------------------------------


def byte_classes(nfa: NFA) -> list[int]:
    """Start bytes of the byte classes: cut 0..255 wherever some NFA edge begins or ends."""
    cuts = {0}
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts.add(lo)
            cuts.add(hi + 1)
    cuts.discard(256)
    return sorted(cuts)


class SubsetConstruction:
    """DFA rows over byte classes: rows[s][c] = next state; states are frozensets of NFA states that have
    byte edges (or accept), each closed under epsilon edges."""

    def __init__(self, nfa: NFA, class_starts: list[int], max_states: int, budget: Budget):
        self.nfa = nfa
        self.class_of = [0] * 256
        for c, lo in enumerate(class_starts):
            hi = class_starts[c + 1] if c + 1 < len(class_starts) else 256
            self.class_of[lo:hi] = [c] * (hi - lo)
        self.max_states = max_states
        self.budget = budget
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
        self.budget.stats.subset_states = 1
        rows: list[dict[int, int]] = []
        while len(rows) < len(subsets):
            self.budget.check()
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
                            f"regex needs more than {self.max_states} DFA states (max_states)",
                            self.budget.stats,
                        )
                    index[key] = len(subsets)
                    subsets.append(key)
                    self.budget.stats.subset_states = len(subsets)
                row[c] = index[key]
            rows.append(row)
        accepting = {s for s, subset in enumerate(subsets) if self.nfa.accept in subset}
        return rows, accepting


# ---------------------------------------------------------------------------------------------------
# Trimming and minimisation
# ---------------------------------------------------------------------------------------------------


def trim(rows: list[dict[int, int]], accepting: set[int]) -> tuple[list[dict[int, int]], set[int]]:
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


def minimise(rows: list[dict[int, int]], accepting: set[int], budget: Budget) -> list[int]:
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
        budget.check()
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


def quotient(
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


def spell_out_bytes(rows: list[dict[int, int]], class_starts: list[int]) -> tuple[dict[int, int], ...]:
    """Rows over byte classes -> rows over bytes: a class's target for each of its bytes."""
    class_ends = class_starts[1:] + [256]
    transitions = []
    for row in rows:
        byte_row: dict[int, int] = {}
        for c, t in row.items():
            byte_row.update(dict.fromkeys(range(class_starts[c], class_ends[c]), t))
        transitions.append(byte_row)
    return tuple(transitions)
