"""Chapter 3: the chained-hash prefix cache against a brute-force model, and the engine with the cache
on against the engine with it off (same greedy tokens), under sharing and under eviction pressure."""

from __future__ import annotations

import pytest
from conftest import PREFIXES, shared_prefix_workload
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from minillm import LLM, SamplingParams
from minillm.kv import prefix_hash
from minillm.kv.prefix_hash import PrefixCachingBlockManager
from minillm.request import Sequence

pytestmark = pytest.mark.ch3


class PrefixCacheMachine(RuleBasedStateMachine):
    """Random admits (prompts built from shared prefixes), appends and frees. The model records what
    each block really holds (the token prefix ending at it) whenever the manager hands it out; every hit
    must hold exactly the prompt's prefix, and no longer cached prefix may exist than the one found."""

    @initialize(num_blocks=st.integers(2, 20), block_size=st.sampled_from([1, 2, 4]))
    def setup(self, num_blocks, block_size):
        self.bm = PrefixCachingBlockManager(num_blocks, block_size, watermark=0.0)
        self.bs, self.num_blocks = block_size, num_blocks
        self.live: dict[int, Sequence] = {}
        self.content: dict[int, tuple] = {}  # block -> token prefix through the end of that block
        self.next_id = 0

    def record(self, seq):
        for i, b in enumerate(seq.block_table):
            end = (i + 1) * self.bs
            if end <= seq.num_tokens:
                self.content[b] = tuple(seq.token_ids[:end])

    @rule(
        prefix=st.sampled_from(PREFIXES), cut=st.integers(1, 8), tail=st.lists(st.integers(0, 3), max_size=6)
    )
    def admit(self, prefix, cut, tail):
        seq = Sequence(self.next_id, list(prefix[:cut]) + tail, SamplingParams())
        self.next_id += 1
        hits = self.bm.match(seq)
        for i, b in enumerate(hits):  # never a wrong hit
            assert self.content.get(b) == tuple(seq.token_ids[: (i + 1) * self.bs])
        cached = {self.content[b] for b in self.bm.allocator.block_key if b in self.content}
        longest = 0
        while (longest + 1) * self.bs <= seq.num_tokens - 1 and tuple(
            seq.token_ids[: (longest + 1) * self.bs]
        ) in cached:
            longest += 1
        assert len(hits) == longest  # the longest cached chain is found
        if self.bm.can_allocate(seq):
            self.bm.allocate(seq)
            assert seq.block_table[: len(hits)] == hits and seq.num_computed_tokens == len(hits) * self.bs
            self.live[seq.request_id] = seq
            self.record(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 3))
    def append(self, data, token):
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        seq.output_token_ids.append(token)
        if self.bm.can_append(seq):
            self.bm.may_append(seq)
            seq.num_computed_tokens = seq.num_tokens
            self.bm.on_computed(seq)
            self.record(seq)
        else:
            seq.output_token_ids.pop()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.bm.free(seq)

    @invariant()
    def accounting(self):
        if not hasattr(self, "bm"):
            return
        alloc = self.bm.allocator
        refs = [0] * self.num_blocks
        for s in self.live.values():
            for b in s.block_table:
                refs[b] += 1
        assert refs == alloc.ref_counts, "reference counts match the block tables"
        free = set(alloc.free_blocks)
        assert free == {b for b in range(self.num_blocks) if refs[b] == 0}, "free iff unreferenced"
        assert {b: h for h, b in alloc.cached.items()} == {b: k[0] for b, k in alloc.block_key.items()}
        for b, (_, _, tokens) in alloc.block_key.items():  # a cached block holds what its key says
            assert self.content[b][-len(tokens) :] == tokens


TestPrefixCache = PrefixCacheMachine.TestCase
TestPrefixCache.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.fixture(scope="module")
def path(tiny_model_with_tokenizer):
    return tiny_model_with_tokenizer[0]


@pytest.fixture(scope="module")
def uncached(path):
    prompts, params = shared_prefix_workload(30, seed=0)
    llm = LLM(path, stage="paged", max_model_len=128, kv_cache_tokens=4096)
    return (
        prompts,
        params,
        [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)],
    )


@pytest.mark.parametrize("block_size, kv_cache_tokens", [(16, 4096), (16, 160), (1, 4096), (1, 100), (4, 96)])
def test_hash_cache_keeps_greedy_outputs(path, uncached, block_size, kv_cache_tokens):
    prompts, params, want = uncached
    llm = LLM(
        path,
        stage="paged",
        prefix_cache="hash",
        max_model_len=128,
        block_size=block_size,
        kv_cache_tokens=kv_cache_tokens,
    )
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in outs] == want
    assert sum(o.metrics.num_cached_tokens for o in outs) > 0
    alloc = llm.engine.kv.manager.allocator
    assert alloc.num_free == alloc.num_blocks and not any(alloc.ref_counts)  # every block free or cached


def test_sequential_requests_hit_and_skip_prefill(path):
    llm = LLM(
        path, stage="paged", prefix_cache="hash", max_model_len=128, block_size=16, kv_cache_tokens=1024
    )
    prompt = list(range(10, 60))  # 50 tokens: 3 full blocks
    p = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    first = llm.generate(prompt_token_ids=[prompt], sampling_params=p)[0]
    llm.engine.step_stats.clear()
    again = llm.generate(prompt_token_ids=[prompt], sampling_params=p)[0]
    assert first.metrics.num_cached_tokens == 0 and again.metrics.num_cached_tokens == 48
    assert again.token_ids == first.token_ids
    assert llm.engine.step_stats[0].num_tokens == 2  # only the uncached tail is prefilled
    full_hit = prompt[:48] + [7]
    assert llm.generate(prompt_token_ids=[full_hit], sampling_params=p)[0].metrics.num_cached_tokens == 48
    whole = prompt[:48]  # a prompt of exactly 3 blocks: the last token is recomputed for its logits
    assert llm.generate(prompt_token_ids=[whole], sampling_params=p)[0].metrics.num_cached_tokens == 32


def test_hash_collisions_are_caught(path, uncached, monkeypatch):
    monkeypatch.setattr(prefix_hash, "block_hash", lambda parent, tokens: 42)  # every block collides
    prompts, params, want = uncached
    llm = LLM(path, stage="paged", prefix_cache="hash", max_model_len=128, block_size=8, kv_cache_tokens=2048)
    assert [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)] == want


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(prefix_cache="lru"), "prefix_cache"), (dict(stage="naive", prefix_cache="hash"), "prefix_cache")],
)
def test_bad_prefix_cache_options_name_the_field(path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        LLM(path, **{"stage": "paged", **kwargs})
