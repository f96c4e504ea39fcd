"""The brute-force model both chapter 3 caches are tested against (hypothesis state machines).

Random admits (prompts built from a few shared prefixes), appends and finishes drive a block manager.
The model records what each block really holds (the token prefix ending at it) whenever the manager
hands it out. Every hit must hold exactly the prompt's prefix, and no longer cached prefix may exist
than the one the cache finds. Subclasses add the cache's own accounting invariants.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from minillm.request import SamplingParams, Sequence

PREFIXES = [(1, 2, 3, 4, 5, 6, 7, 8), (1, 2, 3, 4, 9, 9, 9, 9), (5, 5, 5, 5, 5, 5, 5, 5)]


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

    @rule(
        prefix=st.sampled_from(PREFIXES), cut=st.integers(1, 8), tail=st.lists(st.integers(0, 3), max_size=6)
    )
    def admit(self, prefix, cut, tail):
        seq = Sequence(self.next_id, list(prefix[:cut]) + tail, SamplingParams())
        self.next_id += 1
        hits = self.bm.match(seq)
        for i, b in enumerate(hits):
            assert self.content.get(b) == tuple(seq.token_ids[: (i + 1) * self.bs]), "a wrong hit"
        cached, longest = self.cached_prefixes(), 0
        while (longest + 1) * self.bs < seq.num_tokens and tuple(
            seq.token_ids[: (longest + 1) * self.bs]
        ) in cached:
            longest += 1
        assert len(hits) == longest, "the longest cached prefix is found"
        if self.bm.can_allocate(seq):
            self.bm.allocate(seq)
            assert seq.block_table[: len(hits)] == hits and seq.num_computed_tokens == len(hits) * self.bs
            self.live[seq.request_id] = seq
            self.computed(seq)

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

    def block_refs(self, extra: list[int] = ()) -> list[int]:
        """Reference counts recounted from the live block tables (plus extra holders)."""
        refs = [0] * self.num_blocks
        for s in self.live.values():
            for b in s.block_table:
                refs[b] += 1
        for b in extra:
            refs[b] += 1
        return refs
