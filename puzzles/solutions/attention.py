"""Reference kernels for puzzles 13-16: FlashAttention, causal varlen prefill, KV store, paged decode.

Puzzles 15 and 16 are the engine's own kernels (minillm/attention/triton/, chapter 7), imported here
rather than copied. Puzzles 13 and 14 are the steps before the engine's prefill kernel, which adds the
block table and a cached prefix to puzzle 14 (minillm/attention/triton/prefill.py).

Check one with `python -m puzzles check 16 --solution`.
"""

import triton
import triton.language as tl

from minillm.attention.triton.decode import paged_decode_kernel  # noqa: F401  (puzzle 16)
from minillm.attention.triton.store import store_kvcache_kernel  # noqa: F401  (puzzle 15)


@triton.jit
def flash_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, Tq, Tk, scale,
                           D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)  # (BM,) query rows
    offs_d = tl.arange(0, D)  # (D,)
    q = tl.load(q_ptr + offs_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < Tq, other=0.0)  # (BM, D)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    for start in range(0, Tk, BN):
        offs_n = start + tl.arange(0, BN)  # (BN,) keys
        kv_mask = offs_n[:, None] < Tk
        k = tl.load(k_ptr + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)  # (BN, D)
        v = tl.load(v_ptr + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # (BM, BN)
        s = tl.where(offs_n[None, :] < Tk, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        m_i = m_new
    tl.store(o_ptr + offs_m[:, None] * D + offs_d[None, :], (acc / l_i[:, None]).to(tl.float16),
             mask=offs_m[:, None] < Tq)


@triton.jit
def prefill_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, cu_seqlens_ptr, scale, H: tl.constexpr,
                             KVH: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    block_m, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start_token = tl.load(cu_seqlens_ptr + b)
    seqlen = tl.load(cu_seqlens_ptr + b + 1) - start_token
    if block_m * BM >= seqlen:  # this sequence is shorter than the longest one
        return
    kvh = h // (H // KVH)  # grouped-query attention: H // KVH query heads share a kv head
    offs_m = block_m * BM + tl.arange(0, BM)  # (BM,) query positions within the sequence
    offs_d = tl.arange(0, D)
    q_rows = ((start_token + offs_m[:, None]) * H + h) * D + offs_d[None, :]  # (BM, D)
    q = tl.load(q_ptr + q_rows, mask=offs_m[:, None] < seqlen, other=0.0)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    end = tl.minimum(seqlen, (block_m + 1) * BM)  # block-causal: keys past the last query row are masked
    for start in range(0, end, BN):
        offs_n = start + tl.arange(0, BN)  # (BN,) key positions within the sequence
        kv_rows = ((start_token + offs_n[:, None]) * KVH + kvh) * D + offs_d[None, :]  # (BN, D)
        k = tl.load(k_ptr + kv_rows, mask=offs_n[:, None] < seqlen, other=0.0)
        v = tl.load(v_ptr + kv_rows, mask=offs_n[:, None] < seqlen, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale  # (BM, BN)
        s = tl.where((offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < seqlen), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v)
        m_i = m_new
    tl.store(o_ptr + q_rows, (acc / l_i[:, None]).to(tl.float16), mask=offs_m[:, None] < seqlen)

