"""Chapter 1: attention backends against the float64 reference, on random ragged batches that mix
prefills (many new tokens) and decodes (one new token over a longer context)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.attention.contiguous import ContiguousAttention
from minillm.attention.metadata import StepInputs
from minillm.attention.sdpa import NoCacheAttention
from minillm.attention.torch_ref import ref_varlen_attention
from minillm.kv.contiguous import ContiguousKVCache

pytestmark = pytest.mark.ch1

NH, NKV, D, MAXLEN = 4, 2, 16, 48


def make_step(q_lens, ctx_lens, rows, block_size=MAXLEN, dummy_block=0):
    """The step the runner would build: rows are ch1's one-block tables; slot = row * MAXLEN + position."""
    return StepInputs.from_lengths(
        q_lens, ctx_lens, [[r] for r in rows], block_size=block_size, dummy_block=dummy_block
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=5), st.integers(0, 99)
)
def test_contiguous_attention_matches_reference(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    q_lens = [q for q, _ in shapes]
    ctx_lens = [min(q + c, MAXLEN) for q, c in shapes]
    q_lens = [min(q, c) for q, c in zip(q_lens, ctx_lens)]
    B = len(shapes)
    kv = ContiguousKVCache(1, B + 2, MAXLEN, NKV, D, torch.float64, "cpu")
    rows = torch.randperm(B + 2, generator=g)[:B].tolist()
    # earlier context already in the cache; this step's K/V arrive with the queries
    full_k = [torch.randn(c, NKV, D, generator=g, dtype=torch.float64) for c in ctx_lens]
    full_v = [torch.randn(c, NKV, D, generator=g, dtype=torch.float64) for c in ctx_lens]
    for b, r in enumerate(rows):
        old = ctx_lens[b] - q_lens[b]
        kv.k_cache[0][r, :old] = full_k[b][:old]
        kv.v_cache[0][r, :old] = full_v[b][:old]
    q = torch.randn(sum(q_lens), NH, D, generator=g, dtype=torch.float64)
    k_new = torch.cat([full_k[b][ctx_lens[b] - q_lens[b] :] for b in range(B)])
    v_new = torch.cat([full_v[b][ctx_lens[b] - q_lens[b] :] for b in range(B)])
    step = make_step(q_lens, ctx_lens, rows, dummy_block=kv.dummy_block)
    backend = ContiguousAttention(kv)
    out = backend.forward(0, q, k_new, v_new, backend.prepare(step))
    ref = ref_varlen_attention(q, full_k, full_v, step.cu_seqlens_q)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=5), st.integers(0, 99))
def test_no_cache_attention_matches_reference(lens, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lens), NH, D, generator=g, dtype=torch.float64)
    k = torch.randn(sum(lens), NKV, D, generator=g, dtype=torch.float64)
    v = torch.randn(sum(lens), NKV, D, generator=g, dtype=torch.float64)
    step = make_step(lens, lens, [0] * len(lens), block_size=0)
    backend = NoCacheAttention()
    out = backend.forward(0, q, k, v, backend.prepare(step))
    ref = ref_varlen_attention(q, list(k.split(lens)), list(v.split(lens)), step.cu_seqlens_q)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
