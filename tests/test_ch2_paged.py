"""Chapter 2: the block pool against a brute-force model, and stage paged against stage naive and
transformers, including under preemption."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from minillm import LLM, SamplingParams
from minillm.kv.paged import BlockManager
from minillm.request import Sequence

pytestmark = pytest.mark.ch2


# -- the allocator and block tables, against a brute-force model ---------------------------------
class BlockManagerMachine(RuleBasedStateMachine):
    """Random interleavings of allocate, append, free and preempt. The model: each live sequence's
    token count; everything else (blocks needed, blocks free) follows from it."""

    @initialize(num_blocks=st.integers(1, 24), block_size=st.integers(1, 8))
    def setup(self, num_blocks, block_size):
        self.bm = BlockManager(num_blocks, block_size, watermark=0.0)
        self.num_blocks, self.bs = num_blocks, block_size
        self.live: dict[int, Sequence] = {}  # running sequences
        self.next_id = 0

    def need(self, n: int) -> int:
        return -(-n // self.bs)

    def model_free(self) -> int:
        return self.num_blocks - sum(self.need(s.num_tokens) for s in self.live.values())

    @rule(n=st.integers(1, 40))
    def admit(self, n):
        seq = Sequence(self.next_id, list(range(n)), SamplingParams())
        self.next_id += 1
        fits = self.need(n) <= self.model_free()
        assert self.bm.can_allocate(seq) == fits
        if fits:
            self.bm.allocate(seq)
            self.live[seq.request_id] = seq

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def append(self, data):
        seq = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        free_before = self.model_free()
        seq.output_token_ids.append(7)
        fits = self.need(seq.num_tokens) - self.need(seq.num_tokens - 1) <= free_before
        assert self.bm.can_append(seq) == fits
        if fits:
            self.bm.may_append(seq)
        else:
            seq.output_token_ids.pop()

    @precondition(lambda self: self.live)
    @rule(data=st.data(), preempt=st.booleans())
    def free(self, data, preempt):
        seq = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.bm.free(seq)  # finishing and recompute-preemption free the same way
        assert seq.block_table == []

    @invariant()
    def tables_and_free_list_partition_the_pool(self):
        if not hasattr(self, "bm"):
            return
        owned = [b for s in self.live.values() for b in s.block_table]
        free = list(self.bm.allocator.free_blocks)
        assert len(owned) == len(set(owned)), "a block is owned twice"
        assert sorted(owned + free) == list(range(self.num_blocks)), (
            "a block leaked or is both free and owned"
        )
        assert self.bm.num_free_blocks == self.model_free()
        for s in self.live.values():
            assert len(s.block_table) == self.need(s.num_tokens)
        rc = self.bm.allocator.ref_counts
        assert all(rc[b] == 1 for b in owned) and all(rc[b] == 0 for b in free)


TestBlockManager = BlockManagerMachine.TestCase
TestBlockManager.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the engine ------------------------------------------------------------------------------------
def random_requests(n, seed, max_prompt=40, max_out=24):
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 384) for _ in range(rng.randint(1, max_prompt))] for _ in range(n)]
    params = [
        SamplingParams(max_tokens=rng.randint(1, max_out), temperature=0.0, ignore_eos=True) for _ in prompts
    ]
    return prompts, params


@pytest.fixture(scope="module")
def path(tiny_model_with_tokenizer):
    return tiny_model_with_tokenizer[0]


@pytest.fixture(scope="module")
def naive_outputs(path):
    prompts, params = random_requests(24, seed=0)
    llm = LLM(path, stage="naive", max_model_len=128, kv_cache_tokens=128 * 8, max_num_seqs=8)
    return (
        prompts,
        params,
        [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)],
    )


@pytest.mark.parametrize("block_size", [1, 16, 256])
def test_paged_equals_naive_for_any_block_size(path, naive_outputs, block_size):
    prompts, params, want = naive_outputs
    llm = LLM(
        path, stage="paged", max_model_len=128, block_size=block_size, kv_cache_tokens=4096, max_num_seqs=16
    )
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in outs] == want
    assert llm.engine.kv.manager.num_free_blocks == llm.engine.kv.num_blocks


def test_paged_equals_transformers(tiny_model_with_tokenizer):
    path, hf = tiny_model_with_tokenizer
    prompts, _ = random_requests(4, seed=5)
    llm = LLM(path, stage="paged", max_model_len=128, block_size=4, kv_cache_tokens=512)
    outs = llm.generate(
        prompt_token_ids=prompts,
        sampling_params=SamplingParams(max_tokens=20, temperature=0, ignore_eos=True),
    )
    for p, o in zip(prompts, outs):
        ref = hf.generate(
            torch.tensor([p]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        assert o.token_ids == ref[0, len(p) :].tolist()


def test_stress_200_requests_in_a_small_pool(path):
    prompts, params = random_requests(200, seed=1, max_prompt=30, max_out=20)
    big = LLM(path, stage="paged", max_model_len=64, block_size=8, kv_cache_tokens=8192, max_num_seqs=64)
    want = [o.token_ids for o in big.generate(prompt_token_ids=prompts, sampling_params=params)]
    small = LLM(path, stage="paged", max_model_len=64, block_size=8, kv_cache_tokens=160, max_num_seqs=64)
    outs = small.generate(prompt_token_ids=prompts, sampling_params=params)
    engine = small.engine
    assert [o.token_ids for o in outs] == want
    assert all(o.finish_reason == "length" and len(o.token_ids) == p.max_tokens for o, p in zip(outs, params))
    assert engine.scheduler.num_preemptions > 0, "the pool should have been too small to hold everyone"
    assert engine.kv.manager.num_free_blocks == engine.kv.num_blocks
    assert not engine.scheduler.running and not engine.scheduler.waiting
    for s in engine.step_stats:  # bounded: never past the pool, the token budget or max_num_seqs
        assert s.kv_used <= s.kv_reserved <= s.kv_total
        assert (
            s.num_tokens <= engine.config.max_num_batched_tokens and s.num_seqs <= engine.config.max_num_seqs
        )


def test_waste_is_below_one_block_per_sequence(path):
    prompts, params = random_requests(40, seed=2)
    llm = LLM(path, stage="paged", max_model_len=128, block_size=16, kv_cache_tokens=4096, max_num_seqs=32)
    llm.generate(prompt_token_ids=prompts, sampling_params=params)
    for s in llm.engine.step_stats:
        waste = s.kv_reserved - s.kv_used
        assert 0 <= waste
        # each holding sequence wastes < block_size slots, plus the slot of its just-sampled token
        assert waste <= 32 * 16


def test_requests_join_a_running_batch(path):
    engine = LLM(path, stage="paged", max_model_len=128, kv_cache_tokens=2048).engine
    first = engine.add_request([5, 6, 7], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))
    engine.step()
    engine.step()
    late = engine.add_request([8, 9], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    joined = {o.request_id for o in engine.step()}
    assert joined == {late}  # prefill first: the newcomer's prompt runs now
    both = {o.request_id for o in engine.step()}
    assert both == {first, late}  # then they decode together
    while engine.has_unfinished():
        engine.step()


def test_request_that_can_never_fit_is_rejected_at_admission(path):
    llm = LLM(path, stage="paged", max_model_len=128, block_size=16, kv_cache_tokens=64)
    with pytest.raises(ValueError, match="never fit the KV pool"):
        llm.generate(
            prompt_token_ids=[[1, 2, 3], list(range(3, 53))], sampling_params=SamplingParams(max_tokens=20)
        )
    assert not llm.engine.has_unfinished()
    assert llm.engine.kv.manager.num_free_blocks == llm.engine.kv.num_blocks


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(block_size=0), "block_size"),
        (dict(block_size=-4), "block_size"),
        (dict(kv_cache_tokens=8, block_size=16), "kv_cache_tokens"),
        (dict(scheduler="continuous", kv_cache="contiguous"), "kv_cache"),
    ],
)
def test_bad_paged_options_name_the_field(path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        LLM(path, stage="paged", max_model_len=8, **kwargs)
