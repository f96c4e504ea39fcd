"""Chapter 3: the chained-hash prefix cache against a brute-force model, and the engine with the cache
on against the engine with it off (same greedy tokens), under sharing and under eviction pressure."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant
from prefix_cache_model import PrefixCacheModel

from minillm import LLM, SamplingParams
from minillm.kv import prefix_hash
from minillm.kv.prefix_hash import PrefixCachingBlockManager

pytestmark = pytest.mark.ch3


class PrefixCacheMachine(PrefixCacheModel):
    manager_cls = PrefixCachingBlockManager

    def cached_prefixes(self):
        return {self.content[b] for b in self.bm.allocator.block_key if b in self.content}

    @invariant()
    def accounting(self):
        if not hasattr(self, "bm"):
            return
        alloc = self.bm.allocator
        refs = self.block_refs()
        assert refs == alloc.ref_counts, "reference counts match the block tables"
        free = set(alloc.free_blocks)
        assert free == {b for b in range(self.num_blocks) if refs[b] == 0}, "free iff unreferenced"
        assert {b: h for h, b in alloc.cached.items()} == {b: k[0] for b, k in alloc.block_key.items()}
        for b, (_, _, tokens) in alloc.block_key.items():  # a cached block holds what its key says
            assert self.content[b][-len(tokens) :] == tokens


TestPrefixCache = PrefixCacheMachine.TestCase
TestPrefixCache.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("block_size, kv_cache_tokens", [(16, 4096), (16, 160), (1, 4096), (1, 100), (4, 96)])
def test_hash_cache_keeps_greedy_outputs(tiny_path, shared_prefix_reference, block_size, kv_cache_tokens):
    prompts, params, want = shared_prefix_reference
    llm = LLM(
        tiny_path,
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


def test_sequential_requests_hit_and_skip_prefill(tiny_path):
    llm = LLM(
        tiny_path, stage="paged", prefix_cache="hash", max_model_len=128, block_size=16, kv_cache_tokens=1024
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


@pytest.mark.parametrize("stage, cache", [("paged", "hash"), ("radix", "radix")])
def test_reset_prefix_cache_starts_cold(tiny_path, stage, cache):
    """LLM.reset_prefix_cache (vLLM's): refused while a request runs, then nothing is served from the
    cache, and the same prompt gives the same tokens from a full prefill."""
    llm = LLM(tiny_path, stage=stage, prefix_cache=cache, max_model_len=128, block_size=16, kv_cache_tokens=1024)
    prompt = list(range(10, 60))
    p = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    first = llm.generate(prompt_token_ids=[prompt], sampling_params=p)[0]
    rid = llm.engine.add_request(prompt, p)
    llm.engine.step()
    assert llm.reset_prefix_cache() is False  # a running request holds cached blocks
    llm.engine.abort_request(rid)
    assert llm.generate(prompt_token_ids=[prompt], sampling_params=p)[0].metrics.num_cached_tokens == 48
    assert llm.reset_prefix_cache() is True
    manager = llm.engine.kv.manager
    assert manager.num_free_blocks == manager.num_blocks
    cold = llm.generate(prompt_token_ids=[prompt], sampling_params=p)[0]
    assert cold.metrics.num_cached_tokens == 0 and cold.token_ids == first.token_ids
    assert LLM(tiny_path, stage="paged", max_model_len=128, kv_cache_tokens=1024).reset_prefix_cache()


def test_hash_collisions_are_caught(tiny_path, shared_prefix_reference, monkeypatch):
    monkeypatch.setattr(prefix_hash, "block_hash", lambda parent, tokens: 42)  # every block collides
    prompts, params, want = shared_prefix_reference
    llm = LLM(
        tiny_path, stage="paged", prefix_cache="hash", max_model_len=128, block_size=8, kv_cache_tokens=2048
    )
    assert [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)] == want


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(prefix_cache="lru"), "prefix_cache"), (dict(stage="naive", prefix_cache="hash"), "prefix_cache")],
)
def test_bad_prefix_cache_options_name_the_field(tiny_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        LLM(tiny_path, **{"stage": "paged", **kwargs})
