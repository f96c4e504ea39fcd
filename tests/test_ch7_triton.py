"""Chapter 7: the Triton kernels against a float64 torch reference (in Triton's interpreter on a CPU),
decode_splits' properties, stage triton's greedy tokens against stage unified (chunked prefill, mixed
steps, a prefix-cache hit), the CUDA-graph data path over TritonAttention, and config validation.

Run: pytest -m ch7 (about a minute on two CPU cores; the kernels run as NumPy).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from mixed_run import assert_padded_rows_write_only_the_dummy_block, mixed_run, simulated_graph_llm

import minillm  # noqa: F401  (sets TRITON_INTERPRET before Triton applies any @triton.jit)
from minillm import LLM, EngineConfig, SamplingParams
from minillm.attention.triton.backend import TritonAttention
from minillm.attention.triton.decode import (
    MAX_SPLITS,
    MIN_KEYS_PER_SPLIT,
    TARGET_PROGRAMS,
    decode_splits,
    paged_decode,
    paged_decode_one_pass,
)
from minillm.attention.triton.prefill import paged_prefill
from minillm.attention.triton.store import store_kvcache
from minillm.kv.paged import PagedKVCache

pytestmark = pytest.mark.ch7

GARBAGE = 50.0  # what slots outside every context hold: a kernel that reads one is off by far


# The float64 reference and the paged batches it checks


def reference_attention(q, k_cache, v_cache, block_tables, q_lens, context_lens):
    """float64 attention of each sequence's new rows over its context, gathered through its block table.
    q: (T, H, D) rows of B sequences back to back; returns (T, H, D) float64."""
    _, block_size, KVH, D = k_cache.shape
    H = q.shape[1]
    out, start = [], 0
    for b, (q_len, ctx) in enumerate(zip(q_lens, context_lens)):
        blocks = block_tables[b, : -(-ctx // block_size)].long()  # (nb,) this sequence's blocks
        k = k_cache[blocks].reshape(-1, KVH, D)[:ctx].double()  # (ctx, KVH, D)
        v = v_cache[blocks].reshape(-1, KVH, D)[:ctx].double()
        k, v = k.repeat_interleave(H // KVH, dim=1), v.repeat_interleave(H // KVH, dim=1)  # (ctx, H, D)
        qb = q[start : start + q_len].double()  # (q_len, H, D)
        scores = torch.einsum("qhd,khd->hqk", qb, k) / math.sqrt(D)  # (H, q_len, ctx)
        q_pos = ctx - q_len + torch.arange(q_len)  # (q_len,) absolute positions: cached keys come first
        causal = torch.arange(ctx)[None, :] <= q_pos[:, None]  # (q_len, ctx)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        out.append(torch.einsum("hqk,khd->qhd", probs, v))  # (q_len, H, D)
        start += q_len
    return torch.cat(out)


def paged_batch(context_lens, block_size, KVH, D, dtype=torch.float32, spare_blocks=3, seed=0):
    """A cache whose blocks are handed out in shuffled order: (k_cache, v_cache, block_tables).
    Every slot outside a context (the tail of a last block, unowned blocks, the spare column of every
    table, which points at an unowned block) holds large garbage."""
    g = torch.Generator().manual_seed(seed)
    need = [-(-c // block_size) for c in context_lens]
    num_blocks = sum(need) + spare_blocks
    shape = (num_blocks, block_size, KVH, D)
    k_cache = GARBAGE * torch.randn(shape, generator=g)
    v_cache = GARBAGE * torch.randn(shape, generator=g)
    perm = torch.randperm(num_blocks, generator=g)
    width = max(need) + 1
    tables = torch.full((len(context_lens), width), int(perm[-1]), dtype=torch.int32)  # (B, W)
    used = 0
    for b, (ctx, nb) in enumerate(zip(context_lens, need)):
        tables[b, :nb] = perm[used : used + nb].to(torch.int32)
        used += nb
        slots = torch.arange(ctx)
        blk, off = tables[b, slots // block_size].long(), slots % block_size
        k_cache[blk, off] = torch.randn(ctx, KVH, D, generator=g)
        v_cache[blk, off] = torch.randn(ctx, KVH, D, generator=g)
    return k_cache.to(dtype), v_cache.to(dtype), tables


def strided_q(T, H, KVH, D, dtype=torch.float32, seed=1):
    """(T, H, D) as the model passes it: a view of the fused qkv projection, rows not contiguous."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(T, H + 2 * KVH, D, generator=g).to(dtype)[:, :H]
    assert not q.is_contiguous()
    return q


# (block_size, H, KVH, D): GQA ratios 1, 2, 3 (the embedded model's 6/2), 4, 8; head_dim 64 and 128
SHAPES = [
    pytest.param(16, 4, 4, 64, id="bs16-mha-d64"),
    pytest.param(32, 8, 4, 128, id="bs32-gqa2-d128"),
    pytest.param(16, 6, 2, 64, id="bs16-gqa3-d64"),
    pytest.param(32, 8, 2, 64, id="bs32-gqa4-d64"),
    pytest.param(16, 8, 1, 128, id="bs16-gqa8-d128"),
]

# (q_len, context_len): a one-token prompt, a decode row, whole prompts (one not a block multiple, one
# exactly two blocks of 16), cached prefixes of 1, 16 and 13 keys (context_len > q_len)
PREFILL_ROWS = [(1, 1), (1, 37), (23, 23), (32, 32), (19, 20), (17, 33), (20, 33)]


def check_prefill(block_size, H, KVH, D, rows, dtype=torch.float32, atol=1e-5, rtol=1e-5, **tiles):
    q_lens, ctx_lens = [r[0] for r in rows], [r[1] for r in rows]
    k_cache, v_cache, tables = paged_batch(ctx_lens, block_size, KVH, D, dtype)
    q = strided_q(sum(q_lens), H, KVH, D, dtype)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)  # (B+1,)
    ctx = torch.tensor(ctx_lens, dtype=torch.int32)
    got = paged_prefill(q, k_cache, v_cache, tables, cu, ctx, max(q_lens), **tiles)
    want = reference_attention(q, k_cache, v_cache, tables, q_lens, ctx_lens)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("block_size,H,KVH,D", SHAPES)
def test_prefill_matches_float64_reference(block_size, H, KVH, D):
    check_prefill(block_size, H, KVH, D, PREFILL_ROWS)


@pytest.mark.parametrize("block_m,block_n", [(32, 64), (16, 32)])
def test_prefill_tiles_across_and_within_blocks(block_m, block_n):
    """Key tiles of 64 span four blocks of 16; tiles of 32 at block size 32 are exactly one block."""
    block_size = 16 if block_n == 64 else 32
    check_prefill(
        block_size, 4, 2, 64, [(1, 70), (45, 45), (30, 77), (2, 3)], block_m=block_m, block_n=block_n
    )


def test_prefill_bfloat16():
    check_prefill(16, 6, 2, 64, PREFILL_ROWS, dtype=torch.bfloat16, atol=2e-2, rtol=2e-2)


# decode: contexts of one key, below, at and past block multiples
DECODE_CTX = [1, 5, 16, 33, 100]


def decode_case(block_size, H, KVH, D, dtype=torch.float32, ctx_lens=DECODE_CTX):
    k_cache, v_cache, tables = paged_batch(ctx_lens, block_size, KVH, D, dtype)
    q = strided_q(len(ctx_lens), H, KVH, D, dtype)  # (B, H, D): one query per sequence
    ctx = torch.tensor(ctx_lens, dtype=torch.int32)
    want = reference_attention(q, k_cache, v_cache, tables, [1] * len(ctx_lens), ctx_lens)
    return q, k_cache, v_cache, tables, ctx, want


@pytest.mark.parametrize("num_splits", [1, 3, 16])
@pytest.mark.parametrize("block_size,H,KVH,D", SHAPES)
def test_split_decode_matches_float64_reference(block_size, H, KVH, D, num_splits):
    """16 splits of a context of 1..100 keys: most splits get no key and must weigh nothing."""
    q, k_cache, v_cache, tables, ctx, want = decode_case(block_size, H, KVH, D)
    got = paged_decode(q, k_cache, v_cache, tables, ctx, num_splits)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size,H,KVH,D", SHAPES[::2])
def test_one_pass_decode_matches_float64_reference(block_size, H, KVH, D):
    q, k_cache, v_cache, tables, ctx, want = decode_case(block_size, H, KVH, D)
    got = paged_decode_one_pass(q, k_cache, v_cache, tables, ctx)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_decode_bfloat16():
    q, k_cache, v_cache, tables, ctx, want = decode_case(32, 8, 2, 128, torch.bfloat16)
    for got in (
        paged_decode(q, k_cache, v_cache, tables, ctx, 3),
        paged_decode_one_pass(q, k_cache, v_cache, tables, ctx),
    ):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.double(), want, atol=2e-2, rtol=2e-2)


def test_split_decode_writes_into_out_and_handles_an_empty_batch():
    q, k_cache, v_cache, tables, ctx, want = decode_case(16, 4, 2, 64, ctx_lens=[7, 40])
    out = torch.empty(2, 4, 64)
    assert paged_decode(q, k_cache, v_cache, tables, ctx, 2, out=out) is out
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    empty = paged_decode(q[:0], k_cache, v_cache, tables[:0], ctx[:0], 1)
    assert empty.shape == (0, 4, 64)


@pytest.mark.parametrize(
    "block_size,KVH,D,dtype",
    [
        (16, 2, 64, torch.float32),
        (32, 8, 128, torch.float32),
        (16, 1, 128, torch.float32),
        (32, 4, 64, torch.bfloat16),
    ],
)
def test_store_kvcache_matches_index_copy(block_size, KVH, D, dtype):
    g = torch.Generator().manual_seed(0)
    num_blocks, T = 6, 21
    k_cache = torch.randn(num_blocks, block_size, KVH, D, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, KVH, D, generator=g).to(dtype)
    kv = torch.randn(T, 2 * KVH + 3, D, generator=g).to(dtype)  # k, v: views of a fused projection
    k, v = kv[:, :KVH], kv[:, KVH : 2 * KVH]  # (T, KVH, D)
    slots = torch.randperm(num_blocks * block_size, generator=g)[:T]  # (T,) scattered over shuffled blocks
    slots[7] = -1  # a padding token: writes nothing
    want_k, want_v = k_cache.clone(), v_cache.clone()
    keep = slots >= 0
    want_k.view(-1, KVH, D).index_copy_(0, slots[keep], k[keep])
    want_v.view(-1, KVH, D).index_copy_(0, slots[keep], v[keep])
    store_kvcache(k, v, k_cache, v_cache, slots)
    assert torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)


# decode_splits: a pure function of sizes


def test_decode_splits_properties():
    for kvh in (1, 2, 4, 8):
        for num_seqs in (0, 1, 2, 3, 7, 33, 64, 131, 132, 256, 1000):
            splits = []
            for ctx in (1, 2, 255, 256, 257, 1000, 2048, 8192, 131072):
                s = decode_splits(num_seqs, kvh, ctx)
                assert isinstance(s, int) and 1 <= s <= MAX_SPLITS
                assert s == decode_splits(num_seqs, kvh, ctx)  # the same sizes, the same grid
                assert s <= -(-ctx // MIN_KEYS_PER_SPLIT)  # at least MIN_KEYS_PER_SPLIT keys a split
                if num_seqs * kvh >= TARGET_PROGRAMS:
                    assert s == 1  # the batch alone fills the GPU
                splits.append(s)
            assert splits == sorted(splits)  # a longer context never asks for fewer splits
            # more sequences never ask for more splits
            sizes = [decode_splits(n, kvh, 8192) for n in range(1, 300)]
            assert sizes == sorted(sizes, reverse=True)
    assert decode_splits(1, 1, 1 << 20) == MAX_SPLITS  # one long sequence: as many splits as allowed


# The backend in the engine


def test_backend_refuses_kv_heads_that_are_not_a_power_of_two():
    for nkv in (3, 6):
        kv = PagedKVCache(1, 4, 16, nkv, 32, torch.float32, "cpu")
        with pytest.raises(ValueError, match=f"{nkv} KV heads"):
            TritonAttention(kv)
    for nkv in (1, 2, 4, 8):
        TritonAttention(PagedKVCache(1, 4, 16, nkv, 32, torch.float32, "cpu"))


def test_backend_refuses_head_dims_the_kernels_cannot_tile():
    for d in (8, 80, 96):  # below tl.dot's 16, or not a power of two (tl.arange)
        with pytest.raises(ValueError, match=f"head_dim.*{d}"):
            TritonAttention(PagedKVCache(1, 4, 16, 2, d, torch.float32, "cpu"))
    for d in (16, 64, 128):
        TritonAttention(PagedKVCache(1, 4, 16, 2, d, torch.float32, "cpu"))


def test_tiny_model_kv_heads_are_a_power_of_two(tiny_path):
    nkv = LLM(tiny_path, stage="unified", kv_cache_tokens=256).engine.model_config.num_kv_heads
    assert nkv & (nkv - 1) == 0, nkv


def test_triton_stage_equals_unified_over_a_mixed_run(tiny_path):
    opts = dict(max_num_batched_tokens=32, kv_cache_tokens=2048, max_num_seqs=8)
    want, _ = mixed_run(LLM(tiny_path, stage="unified", **opts), steps=22)
    llm = LLM(tiny_path, stage="triton", **opts)
    assert isinstance(llm.engine.runner.attn_backend, TritonAttention)
    got, kinds = mixed_run(llm, steps=22)
    assert kinds == {"prefill", "decode", "mixed"}  # chunked prefill (a 70-token prompt), mixed and decode
    assert len(want) >= 2 and got == want


def test_triton_stage_equals_unified_with_a_prefix_cache_hit(tiny_path):
    """Round two of the same prompts starts from round one's cached blocks: the prefill kernel attends to
    keys it did not write this step (context_len > q_len)."""
    rng = random.Random(3)
    prompts = [[rng.randrange(3, 300) for _ in range(n)] for n in (1, 21, 40)]
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    opts = dict(max_num_batched_tokens=16, kv_cache_tokens=1024, max_num_seqs=4)
    outs = {}
    for stage in ("unified", "triton"):
        llm = LLM(tiny_path, stage=stage, **opts)
        rounds = [[o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)]]
        manager = llm.engine.kv.manager
        hits_before = manager.num_hit_tokens
        rounds.append([o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)])
        assert manager.num_hit_tokens - hits_before >= 16 + 32, stage  # a block of 21 tokens, two of 40
        assert rounds[0] == rounds[1]
        outs[stage] = rounds
    assert outs["triton"] == outs["unified"]


# The CUDA-graph data path, simulated on the CPU


def triton_graph_llm(tiny_path, **opts):
    """Decode steps replayed over TritonAttention with one table width, the widest (as build.py
    captures stage triton on a GPU)."""
    return simulated_graph_llm(tiny_path, TritonAttention, **opts)


GRAPH_OPTS = dict(
    max_num_batched_tokens=64, kv_cache_tokens=512, max_num_seqs=8, block_size=4, max_model_len=64
)


def test_graph_replay_over_triton_equals_eager(tiny_path):
    rng = random.Random(1)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(1, 9))] for _ in range(7)]
    # different lengths: sequences finish mid-batch, so 7 rows shrink through 6, 5, 3 (between buckets)
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (3, 9, 4, 12, 6, 11, 2)]
    want = LLM(tiny_path, stage="unified", **GRAPH_OPTS).generate(
        prompt_token_ids=prompts, sampling_params=params
    )
    llm = triton_graph_llm(tiny_path, **GRAPH_OPTS)
    assert list(llm.engine.runner.graphs) == [(8, 16), (4, 16), (2, 16), (1, 16)]
    got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert llm.engine.runner.num_replays >= 10  # every decode step replayed: one width serves them all


def test_replay_after_a_wider_step_ignores_the_stale_table_columns(tiny_path):
    """A replay copies only the columns of its step's widest table: a long sequence that finishes first
    leaves its blocks in the columns past them, which the kernels must never read."""
    rng = random.Random(2)
    prompts = [[rng.randrange(3, 300) for _ in range(40)]] + [[rng.randrange(3, 300)] for _ in range(3)]
    params = [SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)] + [
        SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    ] * 3
    want = LLM(tiny_path, stage="unified", **GRAPH_OPTS).generate(
        prompt_token_ids=prompts, sampling_params=params
    )
    llm = triton_graph_llm(tiny_path, **GRAPH_OPTS)
    got = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    tables = llm.engine.runner.attn_backend.cg_block_tables.view(8, 16)  # the 8-row graph's view of the buffer
    assert (tables[:4, 2:] != llm.engine.kv.dummy_block).any()  # stale blocks stayed past the live columns


def test_padded_rows_write_only_the_dummy_block_under_triton(tiny_path):
    assert_padded_rows_write_only_the_dummy_block(triton_graph_llm(tiny_path, **GRAPH_OPTS))


# Config, and one source of truth with the puzzles


def test_attention_config_is_validated():
    with pytest.raises(ValueError, match="attention"):
        EngineConfig.from_stage("unified", attention="bogus")
    with pytest.raises(ValueError, match="attention"):
        EngineConfig.from_stage("naive", attention="triton")  # kv_cache='contiguous'
    with pytest.raises(ValueError, match="attention"):
        EngineConfig(attention="triton", kv_cache="contiguous")
    assert EngineConfig.from_stage("triton").attention == "triton"
    assert "triton" in minillm.STAGES


def test_puzzle_solutions_are_the_engine_kernels():
    from minillm.attention.triton import decode, store
    from puzzles.solutions import attention as solutions

    assert solutions.store_kvcache_kernel is store.store_kvcache_kernel  # puzzle 15
    assert solutions.paged_decode_kernel is decode.paged_decode_kernel  # puzzle 16
