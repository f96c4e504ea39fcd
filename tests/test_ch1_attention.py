"""Chapter 1: attention backends against the float64 reference, on random ragged batches that mix
prefills (many new tokens) and decodes (one new token over a longer context)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.attention.metadata import AttentionMetadata
from minillm.attention.sdpa import NoCacheAttention
from minillm.attention.torch_ref import ref_varlen_attention
from minillm.kv.contiguous import ContiguousAttention, ContiguousKVCache

pytestmark = pytest.mark.ch1

NH, NKV, D, MAXLEN = 4, 2, 16, 48


def make_meta(q_lens, ctx_lens, rows):
    cu = [0]
    for n in q_lens:
        cu.append(cu[-1] + n)
    seq_ids = [b for b, n in enumerate(q_lens) for _ in range(n)]
    slots = [rows[b] * MAXLEN + p for b, (n, c) in enumerate(zip(q_lens, ctx_lens)) for p in range(c - n, c)]
    i32 = lambda x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    return AttentionMetadata(
        i32(cu),
        i32(ctx_lens),
        torch.tensor(slots),
        i32(rows)[:, None],
        torch.tensor(seq_ids),
        max(q_lens),
        max(ctx_lens),
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
    meta = make_meta(q_lens, ctx_lens, rows)
    out = ContiguousAttention(kv).forward(0, q, k_new, v_new, meta)
    ref = ref_varlen_attention(q, full_k, full_v, meta.cu_seqlens_q)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=5), st.integers(0, 99))
def test_no_cache_attention_matches_reference(lens, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lens), NH, D, generator=g, dtype=torch.float64)
    k = torch.randn(sum(lens), NKV, D, generator=g, dtype=torch.float64)
    v = torch.randn(sum(lens), NKV, D, generator=g, dtype=torch.float64)
    meta = make_meta(lens, lens, [0] * len(lens))
    out = NoCacheAttention().forward(0, q, k, v, meta)
    ref = ref_varlen_attention(q, list(k.split(lens)), list(v.split(lens)), meta.cu_seqlens_q)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
