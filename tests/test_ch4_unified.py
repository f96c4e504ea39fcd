"""Chapter 4: the unified token-budget scheduler. Greedy outputs equal the earlier stages'; under random
arrival patterns, budgets and pool sizes no step exceeds the token budget, max_num_seqs or the pool,
every request finishes, and the pool ends free (or cached). Admission, shared with chapter 2's scheduler,
matches the prefix cache once per attempt, and its peeks change nothing."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefix_cache_model import PREFIXES, cache_state

from minillm import LLM, SamplingParams
from minillm.kv.paged import BlockManager, PagedKVCache
from minillm.kv.prefix_hash import PrefixCachingBlockManager
from minillm.kv.radix import RadixBlockManager
from minillm.request import Sequence, SequenceStatus
from minillm.scheduler.continuous import ContinuousScheduler
from minillm.scheduler.unified import UnifiedScheduler

pytestmark = pytest.mark.ch4


def mixed_workload(n, seed, max_prompt=120):
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 384) for _ in range(rng.randint(1, max_prompt))] for _ in range(n)]
    params = [
        SamplingParams(max_tokens=rng.randint(1, 12), temperature=0.0, ignore_eos=True) for _ in prompts
    ]
    return prompts, params


@pytest.fixture(scope="module")
def reference(tiny_path):
    prompts, params = mixed_workload(24, seed=0)
    llm = LLM(tiny_path, stage="naive", max_model_len=160, kv_cache_tokens=160 * 8, max_num_seqs=8)
    return (
        prompts,
        params,
        [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)],
    )


@pytest.mark.parametrize("prefix_cache", [None, "hash", "radix"])
@pytest.mark.parametrize("budget, threshold", [(16, 0), (64, 8), (512, 0)])
def test_unified_equals_naive(tiny_path, reference, prefix_cache, budget, threshold):
    prompts, params, want = reference
    llm = LLM(
        tiny_path,
        stage="unified",
        prefix_cache=prefix_cache,
        schedule_policy="lpm" if prefix_cache else "fcfs",
        max_model_len=160,
        kv_cache_tokens=2048,
        max_num_batched_tokens=budget,
        long_prefill_token_threshold=threshold,
    )
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in outs] == want
    stats = llm.engine.step_stats
    assert max(s.num_tokens for s in stats) <= budget
    if budget < 120:  # some prompt was longer than the budget: it was chunked, and mixed with decodes
        assert any(s.num_tokens == budget for s in stats)


def test_long_prompt_does_not_stall_decodes(tiny_path):
    """The point of the chapter: with a budget, a long prompt's prefill shares steps with running decodes."""
    engine = LLM(
        tiny_path, stage="unified", max_model_len=256, kv_cache_tokens=4096, max_num_batched_tokens=32
    ).engine
    p = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    short = engine.add_request([5, 6, 7], p)
    engine.step()
    long = engine.add_request(list(range(10, 210)), p)  # 200 tokens: 7 chunks of <= 31 next to the decode
    steps_with_short = 0
    while engine.has_unfinished():
        outs = {o.request_id for o in engine.step()}
        if short in outs:
            steps_with_short += 1
        if any(o == long for o in outs):
            break
    assert steps_with_short >= 6  # the short request decoded in every step of the long prefill
    while engine.has_unfinished():
        engine.step()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    budget=st.sampled_from([8, 16, 48, 200]),
    max_num_seqs=st.integers(1, 6),
    kv_cache_tokens=st.sampled_from([160, 256, 1024]),
    prefix_cache=st.sampled_from([None, "hash", "radix"]),
    threshold=st.sampled_from([0, 4]),
)
def test_random_arrivals_stay_bounded_and_finish(
    tiny_path, seed, budget, max_num_seqs, kv_cache_tokens, prefix_cache, threshold
):
    rng = random.Random(seed)
    llm = LLM(
        tiny_path,
        stage="unified",
        prefix_cache=prefix_cache,
        schedule_policy="fcfs",
        max_model_len=128,
        kv_cache_tokens=kv_cache_tokens,
        block_size=8,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        long_prefill_token_threshold=threshold,
    )
    engine = llm.engine
    prompts, params = mixed_workload(12, seed, max_prompt=60)
    pending = list(zip(prompts, params))
    finished = set()
    ids = []
    for _ in range(2000):
        for _ in range(rng.randint(0, 2)):  # random arrivals between steps
            if pending:
                ids.append(engine.add_request(*pending.pop(0)))
        if not pending and not engine.has_unfinished():
            break
        finished |= {o.request_id for o in engine.step() if o.finished}
        s = engine.step_stats[-1] if engine.step_stats else None
        if s is not None:
            assert s.num_tokens <= budget and s.num_seqs <= max_num_seqs and s.kv_reserved <= s.kv_total
    assert finished == set(ids) and len(ids) == 12, "every request finishes: no starvation"
    m = engine.kv.manager
    evictable = m.cache.evictable_size if prefix_cache == "radix" else 0
    assert m.num_free_blocks + evictable == m.num_blocks


def test_lookahead_slots_reserve_blocks_beyond_the_tokens():
    bm = BlockManager(num_blocks=4, block_size=4, watermark=0.0)
    seq = Sequence(0, [1, 2, 3, 4, 5], SamplingParams())
    bm.allocate(seq)
    assert len(seq.block_table) == 2
    assert bm.can_append(seq, num_lookahead_slots=3)  # 5 + 3 tokens: still 2 blocks
    assert bm.can_append(seq, num_lookahead_slots=11)  # 16 slots: all 4 blocks
    assert not bm.can_append(seq, num_lookahead_slots=12)
    bm.may_append(seq, num_lookahead_slots=7)  # 12 slots: 3 blocks
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 1
    bm.free(seq)
    assert bm.num_free_blocks == 4


def instrument(bm) -> dict:
    """Count the manager's lookups, in place: admission matches (a radix match splits and touches LRU
    times), peeks (which must change nothing), admissions; and check that can_allocate and allocate get
    the hit of the attempt's match, so they never look up again."""
    count = dict(match=0, match_prefix=0, peek=0, admitted=0)
    last = dict(hit=None, peeking=False)
    match, peek, can_allocate, allocate = bm.match, bm.num_cached_tokens, bm.can_allocate, bm.allocate

    def counted_match(seq):
        hit = match(seq)
        if not last["peeking"]:  # the hash cache's peek is its (read-only) match
            count["match"] += 1
            last["hit"] = hit
        return hit

    def counted_peek(seq):
        count["peek"] += 1
        before = cache_state(bm)
        last["peeking"] = True
        try:
            n = peek(seq)
        finally:
            last["peeking"] = False
        assert cache_state(bm) == before, "a peek changes nothing"
        return n

    def checked_can_allocate(seq, num_tokens=None, hit=None):
        assert hit is not None and hit is last["hit"], "can_allocate gets the attempt's hit"
        return can_allocate(seq, num_tokens, hit)

    def checked_allocate(seq, num_tokens=None, hit=None):
        if not seq.block_table:
            assert hit is not None and hit is last["hit"], "allocate gets the attempt's hit"
            count["admitted"] += 1
        return allocate(seq, num_tokens, hit)

    bm.match, bm.num_cached_tokens = counted_match, counted_peek
    bm.can_allocate, bm.allocate = checked_can_allocate, checked_allocate
    if hasattr(bm, "cache"):
        match_prefix = bm.cache.match_prefix

        def counted_match_prefix(tokens):
            count["match_prefix"] += 1
            return match_prefix(tokens)

        bm.cache.match_prefix = counted_match_prefix
    return count


@settings(max_examples=60, deadline=None)
@given(
    scheduler_cls=st.sampled_from([ContinuousScheduler, UnifiedScheduler]),
    manager_cls=st.sampled_from([RadixBlockManager, PrefixCachingBlockManager]),
    policy=st.sampled_from(["fcfs", "lpm"]),
    block_size=st.sampled_from([1, 2, 4]),
    extra_blocks=st.integers(0, 16),
    max_num_seqs=st.integers(1, 4),
    budget=st.sampled_from([3, 8, 32]),
    requests=st.lists(
        st.tuples(
            st.sampled_from(PREFIXES),
            st.integers(1, 8),
            st.lists(st.integers(0, 3), max_size=6),
            st.integers(1, 4),  # max_tokens
            st.integers(0, 2),  # steps until the next arrival
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_admission_matches_the_prefix_cache_once(
    scheduler_cls, manager_cls, policy, block_size, extra_blocks, max_num_seqs, budget, requests
):
    """Scheduler and manager alone, with a pretend model: each step, at most one match per admission
    attempt (one per admitted request, plus the attempt that stops the loop), and peeks only for lpm
    ordering, at most one per waiting request."""
    longest = 14 + 4 - 1  # a prompt and all but the last of its outputs
    if scheduler_cls is ContinuousScheduler:
        budget = 32  # chapter 2 prefills whole sequences: the budget holds the longest
    num_blocks = -(-longest // block_size) + extra_blocks
    kv = PagedKVCache(1, num_blocks, block_size, 1, 1, torch.float32, "cpu", manager_cls=manager_cls)
    bm = kv.manager
    count = instrument(bm)
    sched = scheduler_cls(max_num_seqs, budget, kv, policy=policy)
    pending, live, wait = list(requests), [], 0
    for _ in range(400):
        while pending and wait == 0:
            prefix, cut, tail, max_tokens, wait = pending.pop(0)
            seq = Sequence(len(live), list(prefix[:cut]) + tail, SamplingParams(max_tokens=max_tokens))
            live.append(seq)
            sched.add(seq)
        wait = max(0, wait - 1)
        if not sched.has_unfinished():
            if not pending:
                break
            continue
        for k in count:
            count[k] = 0
        num_waiting, num_preemptions = len(sched.waiting), sched.num_preemptions
        batch = sched.schedule()
        assert batch is not None, "the scheduler could run nothing while requests are waiting"
        assert count["match"] <= count["admitted"] + 1
        if manager_cls is RadixBlockManager:
            assert count["match_prefix"] == count["match"], "no mutating match but admission's"
        max_peeks = num_waiting + sched.num_preemptions - num_preemptions if policy == "lpm" else 0
        assert count["peek"] <= max_peeks
        sched.update(batch)
        for seq in batch.seqs:
            if seq.num_computed_tokens == seq.num_tokens:  # this step computed its last token: sample
                seq.output_token_ids.append(seq.num_tokens % 4)
                if len(seq.output_token_ids) >= seq.params.max_tokens:
                    seq.status = SequenceStatus.FINISHED
                    sched.finish(seq)
    assert not pending and all(s.is_finished for s in live), "every request finishes"
    evictable = bm.cache.evictable_size if manager_cls is RadixBlockManager else 0
    assert bm.num_free_blocks + evictable == bm.num_blocks


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(long_prefill_token_threshold=-1), "long_prefill_token_threshold"),
        (dict(scheduler="unified", kv_cache="contiguous"), "kv_cache"),
    ],
)
def test_bad_unified_options_name_the_field(tiny_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        LLM(tiny_path, **{"stage": "unified", **kwargs})


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([1, 1, 2, 7, 20]), st.integers(0, 30)), min_size=1, max_size=6),
    st.integers(0, 99),
)
def test_paged_attention_on_mixed_batches_matches_reference(shapes, seed):
    """Decodes (1 new token) and prefill chunks (several) in one batch, against the float64 oracle."""
    import torch

    from minillm.attention.metadata import StepInputs
    from minillm.attention.paged import PagedAttention
    from minillm.attention.torch_ref import ref_varlen_attention
    from minillm.kv.paged import PagedKVCache

    g = torch.Generator().manual_seed(seed)
    nh, nkv, d, bs = 4, 2, 8, 4
    kv = PagedKVCache(1, 64, bs, nkv, d, torch.float64, "cpu")
    perm = torch.randperm(64, generator=g).tolist()
    q_lens = [q for q, _ in shapes]
    ctx = [q + c for q, c in shapes]
    tables, k_full, v_full = [], [], []
    for n, c in zip(q_lens, ctx):
        table = [perm.pop() for _ in range(-(-c // bs))]
        tables.append(table)
        k_full.append(torch.randn(c, nkv, d, generator=g, dtype=torch.float64))
        v_full.append(torch.randn(c, nkv, d, generator=g, dtype=torch.float64))
        for p in range(c - n):  # earlier context already in the cache
            kv.k_cache[0][table[p // bs], p % bs] = k_full[-1][p]
            kv.v_cache[0][table[p // bs], p % bs] = v_full[-1][p]
    step = StepInputs.from_lengths(q_lens, ctx, tables, block_size=bs, dummy_block=kv.dummy_block)
    q = torch.randn(sum(q_lens), nh, d, generator=g, dtype=torch.float64)
    k_new = torch.cat([k[c - n :] for k, n, c in zip(k_full, q_lens, ctx)])
    v_new = torch.cat([v[c - n :] for v, n, c in zip(v_full, q_lens, ctx)])
    backend = PagedAttention(kv)
    out = backend.forward(0, q, k_new, v_new, backend.prepare(step))
    torch.testing.assert_close(
        out, ref_varlen_attention(q, k_full, v_full, step.cu_seqlens_q), rtol=1e-10, atol=1e-10
    )


def test_reconfigure_validates_before_changing_anything(tiny_path):
    llm = LLM(tiny_path, stage="unified", max_model_len=200, max_num_batched_tokens=32, kv_cache_tokens=1024)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        llm.engine.reconfigure(scheduler="continuous")  # cannot chunk: 200-token sequences need a 200 budget
    assert llm.engine.config.scheduler == "unified"
    out = llm.generate(prompt_token_ids=[list(range(5, 105))], sampling_params=SamplingParams(max_tokens=2))
    assert len(out[0].token_ids) == 2


def test_same_prompt_prefilled_twice_in_chunks_with_a_tight_pool():
    """Two requests prefill one prompt chunk by chunk; the radix tree ends up holding one copy while the
    second request computed its own. A tight pool then makes that request preempt itself; it must start
    again (hitting the tree), not stall the engine."""
    from minillm import DEFAULT_MODEL

    prompt = list(range(100, 109))
    params = [
        SamplingParams(max_tokens=7, temperature=0, ignore_eos=True),
        SamplingParams(max_tokens=1, temperature=0, ignore_eos=True),
    ]
    outs = {}
    for cache in (None, "radix", "hash"):
        llm = LLM(
            DEFAULT_MODEL,
            stage="unified",
            prefix_cache=cache,
            schedule_policy="fcfs",
            block_size=4,
            kv_cache_tokens=16,
            max_num_batched_tokens=8,
            long_prefill_token_threshold=4,
            max_model_len=64,
        )
        outs[cache] = [
            o.token_ids for o in llm.generate(prompt_token_ids=[prompt, prompt], sampling_params=params)
        ]
    assert outs["radix"] == outs["hash"] == outs[None]
