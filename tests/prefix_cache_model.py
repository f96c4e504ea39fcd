"""The brute-force model both chapter 3 caches are tested against (hypothesis state machines).

Random admits (prompts built from a few shared prefixes), appends, finishes and resets (forget every
cached prefix, refused while a sequence holds blocks) drive a block manager.
The model records what each block really holds (the token prefix ending at it) whenever the manager
hands it out. Every hit must hold exactly the prompt's prefix, and no longer cached prefix may exist
than the one the cache finds. An admission matches once and hands its hit to can_allocate and allocate;
a peek (num_cached_tokens) must agree with the match and leave the cache exactly as it was. Subclasses
add the cache's own accounting invariants.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from minillm.request import SamplingParams, Sequence

PREFIXES = [(1, 2, 3, 4, 5, 6, 7, 8), (1, 2, 3, 4, 9, 9, 9, 9), (5, 5, 5, 5, 5, 5, 5, 5)]
PROMPT = dict(
    prefix=st.sampled_from(PREFIXES), cut=st.integers(1, 8), tail=st.lists(st.integers(0, 3), max_size=6)
)


class PrefixCacheModel(RuleBasedStateMachine):
    manager_cls = None  # the block manager under test

    def cached_prefixes(self) -> set[tuple[int, ...]]:
        """Token prefixes (ending on a block boundary) the cache claims to hold."""
        raise NotImplementedError

    @initialize(num_blocks=st.integers(3, 24), block_size=st.sampled_from([1, 2, 4]))
    def setup(self, num_blocks, block_size):
        self.bm = self.manager_cls(num_blocks, block_size, watermark=0.0)
        self.bs, self.num_blocks = block_size, num_blocks
        self.live: dict[int, Sequence] = {}
        self.content: dict[int, tuple] = {}  # block -> token prefix through the end of that block
        self.next_id = 0

    def computed(self, seq: Sequence) -> None:
        """As if the step ran: every token's K/V is written; the model learns what each block holds."""
        seq.num_computed_tokens = seq.num_tokens
        self.bm.on_computed(seq)
        for i, b in enumerate(seq.block_table):
            if (i + 1) * self.bs <= seq.num_tokens:
                self.content[b] = tuple(seq.token_ids[: (i + 1) * self.bs])

    def longest_cached(self, seq: Sequence) -> int:
        """Brute force: full blocks of seq's longest cached prefix, its last token left to compute."""
        cached, longest = self.cached_prefixes(), 0
        while (longest + 1) * self.bs < seq.num_tokens and tuple(
            seq.token_ids[: (longest + 1) * self.bs]
        ) in cached:
            longest += 1
        return longest

    @rule(**PROMPT)
    def admit(self, prefix, cut, tail):
        seq = Sequence(self.next_id, list(prefix[:cut]) + tail, SamplingParams())
        self.next_id += 1
        hit = self.bm.match(seq)
        hits = hit.blocks
        for i, b in enumerate(hits):
            assert self.content.get(b) == tuple(seq.token_ids[: (i + 1) * self.bs]), "a wrong hit"
        assert len(hits) == self.longest_cached(seq), "the longest cached prefix is found"
        assert hit.num_cached_tokens == len(hits) * self.bs
        if self.bm.can_allocate(seq, hit=hit):
            self.bm.allocate(seq, hit=hit)
            assert seq.block_table[: len(hits)] == hits and seq.num_computed_tokens == len(hits) * self.bs
            self.live[seq.request_id] = seq
            self.computed(seq)

    @rule(**PROMPT)
    def peek(self, prefix, cut, tail):
        seq = Sequence(-1, list(prefix[:cut]) + tail, SamplingParams())
        before = cache_state(self.bm)
        n = self.bm.num_cached_tokens(seq)
        assert cache_state(self.bm) == before, "a peek changes nothing"
        assert n == self.longest_cached(seq) * self.bs == self.bm.match(seq).num_cached_tokens

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 3))
    def append(self, data, token):
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        seq.output_token_ids.append(token)
        if self.bm.can_append(seq):
            self.bm.may_append(seq)
            self.computed(seq)
        else:
            seq.output_token_ids.pop()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def finish(self, data):
        self.bm.free(self.live.pop(data.draw(st.sampled_from(sorted(self.live)))))

    @rule()
    def reset(self):
        before = cache_state(self.bm)
        done = self.bm.reset_prefix_cache()
        assert done == (not self.live), "a reset is refused exactly while a sequence holds blocks"
        if done:
            assert not self.cached_prefixes() and self.bm.num_free_blocks == self.num_blocks
        else:
            assert cache_state(self.bm) == before, "a refused reset changes nothing"

    def block_refs(self, extra: list[int] = ()) -> list[int]:
        """Reference counts recounted from the live block tables (plus extra holders)."""
        refs = [0] * self.num_blocks
        for s in self.live.values():
            for b in s.block_table:
                refs[b] += 1
        for b in extra:
            refs[b] += 1
        return refs


def cache_state(bm) -> tuple:
    """Everything a lookup could change, as plain values: the radix tree (structure, locks, LRU times,
    sizes, clock) or the hash map, then reference counts, the free list in order, the statistics."""
    alloc = bm.allocator
    if hasattr(bm, "cache"):
        c = bm.cache
        index = (_freeze(c.root), c.evictable_size, c.protected_size, repr(c._clock), c.num_evicted_blocks)
    else:
        index = (dict(alloc.cached), dict(alloc.block_key), alloc.num_evictions)
    return index, list(alloc.ref_counts), list(alloc.free_blocks), bm.num_queried_tokens, bm.num_hit_tokens


def _freeze(node) -> tuple:
    children = tuple(_freeze(node.children[k]) for k in sorted(node.children))
    return (node.id, node.key, tuple(node.blocks), node.lock_ref, node.last_access, children)
