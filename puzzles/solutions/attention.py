"""Reference kernels for puzzles 13-16: FlashAttention, causal varlen prefill, KV store, paged decode.

Check one with `python -m puzzles check 16 --solution`.
"""

import triton
import triton.language as tl


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


@triton.jit
def store_kvcache_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
                         KVH: tl.constexpr, D: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t)
    if slot < 0:  # a padding token: nothing to store
        return
    offs = tl.arange(0, KVH)[:, None] * D + tl.arange(0, D)[None, :]  # (KVH, D) one token's heads
    tl.store(k_cache_ptr + slot * (KVH * D) + offs, tl.load(key_ptr + t * (KVH * D) + offs))
    tl.store(v_cache_ptr + slot * (KVH * D) + offs, tl.load(value_ptr + t * (KVH * D) + offs))


@triton.jit
def paged_decode_kernel(q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, o_ptr, scale,
                        max_blocks, H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr,
                        BLOCK_SIZE: tl.constexpr):
    b, h = tl.program_id(0), tl.program_id(1)
    kvh = h // (H // KVH)
    n = tl.load(context_lens_ptr + b)
    offs_d = tl.arange(0, D)  # (D,)
    offs_t = tl.arange(0, BLOCK_SIZE)  # (BLOCK_SIZE,) rows of one KV block
    q = tl.load(q_ptr + (b * H + h) * D + offs_d).to(tl.float32)  # (D,)
    m_i = float("-inf")
    l_i = 0.0
    acc = tl.zeros((D,), dtype=tl.float32)
    for i in range(0, tl.cdiv(n, BLOCK_SIZE)):  # only the blocks this sequence owns
        block_id = tl.load(block_tables_ptr + b * max_blocks + i)
        pos = i * BLOCK_SIZE + offs_t  # (BLOCK_SIZE,) token positions in the sequence
        rows = ((block_id * BLOCK_SIZE + offs_t[:, None]) * KVH + kvh) * D + offs_d[None, :]  # (BLOCK_SIZE, D)
        k = tl.load(k_cache_ptr + rows, mask=pos[:, None] < n, other=0.0).to(tl.float32)
        v = tl.load(v_cache_ptr + rows, mask=pos[:, None] < n, other=0.0).to(tl.float32)
        s = tl.sum(q[None, :] * k, axis=1) * scale  # (BLOCK_SIZE,)
        s = tl.where(pos < n, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    tl.store(o_ptr + (b * H + h) * D + offs_d, (acc / l_i).to(tl.float16))
