"""Chapter 3: the radix tree against brute force (hypothesis), and stage radix against the engine
without a cache (same greedy tokens), with fcfs and lpm, under sharing and under eviction pressure."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from prefix_cache_model import PrefixCacheModel

from minillm import LLM, SamplingParams
from minillm.kv.radix import RadixBlockManager

pytestmark = pytest.mark.ch3


class RadixMachine(PrefixCacheModel):
    """Adds eviction at any moment; the tree's locks, sizes and the reference counts (one per live
    table holding a block, plus one for the tree) must agree with a recount from scratch."""

    manager_cls = RadixBlockManager

    def cached_prefixes(self):
        return self.bm.cache.cached_sequences()

    @rule(n=st.integers(1, 6))
    def evict(self, n):
        self.bm.cache.evict(n)

    @invariant()
    def consistent(self):
        if not hasattr(self, "bm"):
            return
        cache, alloc = self.bm.cache, self.bm.allocator
        nodes = list(cache.nodes())
        in_tree = [b for n in nodes for b in n.blocks]
        assert len(in_tree) == len(set(in_tree)) == cache.total_size
        assert cache.evictable_size == sum(len(n.blocks) for n in nodes if n.lock_ref == 0)
        assert cache.protected_size == sum(len(n.blocks) for n in nodes if n.lock_ref > 0)
        for n in nodes:
            assert n.blocks and len(n.key) == len(n.blocks) * self.bs
            assert n.parent.children[n.key[: self.bs]] is n
            below = sum(1 for s in self.live.values() if _is_ancestor(n, self.bm.locked[s.request_id]))
            assert n.lock_ref == below, "lock_ref counts the sequences locked at or below the node"
        refs = self.block_refs(extra=in_tree)
        assert refs == alloc.ref_counts
        assert sorted(alloc.free_blocks) == [b for b in range(self.num_blocks) if refs[b] == 0]
        for b in in_tree:  # the tree's blocks hold what the tree says
            assert b in self.content


def _is_ancestor(node, descendant) -> bool:
    while descendant is not None:
        if descendant is node:
            return True
        descendant = descendant.parent
    return False


TestRadix = RadixMachine.TestCase
TestRadix.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("policy", ["fcfs", "lpm"])
@pytest.mark.parametrize("block_size, kv_cache_tokens", [(16, 4096), (16, 160), (1, 4096), (1, 100), (4, 96)])
def test_radix_keeps_greedy_outputs(tiny_path, shared_prefix_reference, policy, block_size, kv_cache_tokens):
    prompts, params, want = shared_prefix_reference
    llm = LLM(
        tiny_path,
        stage="radix",
        schedule_policy=policy,
        max_model_len=128,
        block_size=block_size,
        kv_cache_tokens=kv_cache_tokens,
    )
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in outs] == want
    assert sum(o.metrics.num_cached_tokens for o in outs) > 0
    m = llm.engine.kv.manager
    assert m.cache.protected_size == 0 and not m.locked  # nothing locked once all requests are done
    assert m.num_free_blocks + m.cache.evictable_size == m.num_blocks  # every block free or cached


def test_multi_turn_conversation_hits_the_previous_turn(tiny_path):
    llm = LLM(tiny_path, stage="radix", max_model_len=256, block_size=4, kv_cache_tokens=2048)
    p = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    history = [11, 12, 13, 14, 15, 16, 17]
    for turn in range(4):
        out = llm.generate(prompt_token_ids=[history], sampling_params=p)[0]
        if turn:  # everything but the new user message and the unfinished last block was cached
            assert out.metrics.num_cached_tokens >= len(history) - 3 - 4 - 1
        history = history + out.token_ids + [20 + turn, 30 + turn, 40 + turn]


def test_lpm_runs_the_cached_prefix_first(tiny_path):
    engine = LLM(
        tiny_path, stage="radix", max_model_len=128, block_size=4, kv_cache_tokens=2048, max_num_seqs=1
    ).engine
    shared = list(range(50, 70))
    p = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    engine.add_request(shared + [1], p)
    while engine.has_unfinished():
        engine.step()
    cold = engine.add_request([90, 91, 92, 93, 94, 95], p)
    warm = engine.add_request(shared + [2], p)
    first = {o.request_id for o in engine.step()}
    assert first == {warm} and cold != warm
    while engine.has_unfinished():
        engine.step()


def test_lpm_needs_a_cache(tiny_path):
    with pytest.raises(ValueError, match="lpm"):
        LLM(tiny_path, stage="paged", schedule_policy="lpm")


def test_eviction_is_lru_over_unlocked_leaves_and_stops_when_enough():
    from minillm.kv.paged import BlockAllocator
    from minillm.kv.radix import RadixCache

    alloc = BlockAllocator(16)
    cache = RadixCache(2, alloc)
    seqs = {name: [base, base + 1, base + 2, base + 3] for name, base in (("a", 10), ("b", 20), ("c", 30))}
    for tokens in seqs.values():
        blocks = [alloc.allocate(), alloc.allocate()]
        cache.insert(tokens, blocks)
        for b in blocks:
            alloc.free(b)  # only the tree holds them now
    locked_blocks, node = cache.match_prefix(seqs["c"])
    cache.lock(node)
    cache.match_prefix(seqs["a"])  # a is now more recent than b
    assert cache.evict(1) == 2  # one whole leaf (2 blocks), not more
    assert {tuple(s) for s in seqs.values()} - cache.cached_sequences() == {tuple(seqs["b"])}
    assert cache.evict(10) == 2 and cache.cached_sequences() == {tuple(seqs["c"][:2]), tuple(seqs["c"])}
    assert cache.protected_size == 2 and cache.evictable_size == 0 and alloc.num_free == 14
    cache.unlock(node)
    assert cache.evict(10) == 2 and alloc.num_free == 16 and cache.total_size == 0


def test_peek_counts_without_splitting_or_touching():
    from minillm.kv.paged import BlockAllocator
    from minillm.kv.radix import RadixCache

    alloc = BlockAllocator(8)
    cache = RadixCache(2, alloc)
    blocks = [alloc.allocate() for _ in range(3)]
    cache.insert([1, 2, 3, 4, 5, 6], blocks)
    (node,) = cache.nodes()
    inserted_at = node.last_access
    assert cache.peek_prefix([1, 2, 3, 4, 9, 9]) == 2  # ends inside the node: no split
    assert list(cache.nodes()) == [node] and node.last_access == inserted_at and node.blocks == blocks
    hits, split = cache.match_prefix([1, 2, 3, 4, 9, 9])  # the admission's match splits there
    assert hits == blocks[:2] and split.blocks == blocks[:2] and node.blocks == blocks[2:]
    assert split.last_access == node.last_access > inserted_at
