"""Paged decode attention: one query token per sequence, keys and values read through the block table.

Decode attention does two flops per byte it reads: it is a bandwidth problem, and the kernel's job is
to keep every SM streaming K/V. Two steps, as the chapter teaches them:

  paged_decode_kernel (puzzle 16): one program per (sequence, query head) walks the sequence's blocks
    with an online softmax. Simple, and two weaknesses: B * H programs cannot fill 132 SMs at small
    batch, and the H / KVH query heads that share a KV head each read it again.
  paged_decode_split_kernel + decode_reduce_kernel (flash-decoding): one program per (sequence, KV head,
    split) takes 1/S of the context, scores all the query heads of its KV head at once (one tl.dot over
    a (heads, D) tile, so each K/V tile is read once), and writes a partial output with its log-sum-exp;
    a second kernel combines the S partials of each (sequence, head). S grows when B * KVH is small;
    with S = 1 the split kernel normalises and writes the output itself, and no reduce is launched.

Checked by: pytest -m ch7 -k decode (float64 reference), python -m puzzles check 16 --solution.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from minillm.attention.triton import bf16_dot_workaround, interpreting
from minillm.attention.triton.prefill import LOG2E

TARGET_PROGRAMS = 264  # two waves of the H200's 132 SMs
MAX_SPLITS = 16
# 64 keys (two 32-key tiles) a split at the least: at batch 1 on the H200 sixteen splits read 1.6-3.6x
# faster than four or one at 1k-8k keys (docs/benchmarks/ch07_h200_2026-12-02/run2, the split sweep)
MIN_KEYS_PER_SPLIT = 64


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
        block_id = tl.load(block_tables_ptr + b * max_blocks + i).to(tl.int64)  # offsets past 2^31
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
    tl.store(o_ptr + (b * H + h) * D + offs_d, (acc / l_i).to(o_ptr.dtype.element_ty))


@triton.jit
def paged_decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, mid_o_ptr, mid_lse_ptr,
    o_ptr, stride_qt, stride_qh, stride_bt, stride_ot, stride_oh, qk_scale, num_splits,
    H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, BN: tl.constexpr, ONE_SPLIT: tl.constexpr,
):
    b, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ctx = tl.load(context_lens_ptr + b)
    split_len = tl.cdiv(tl.cdiv(ctx, num_splits), BN) * BN  # whole tiles per split
    lo = split * split_len
    hi = tl.minimum(lo + split_len, ctx)
    offs_g = tl.arange(0, BLOCK_H)  # (BLOCK_H,) query heads of this KV head, padded to a dot's rows
    g_ok = offs_g < GROUP
    heads = kvh * GROUP + offs_g
    offs_d = tl.arange(0, D)
    q = tl.load(q_ptr + b * stride_qt + heads[:, None] * stride_qh + offs_d[None, :],
                mask=g_ok[:, None], other=0.0)  # (BLOCK_H, D)
    m_i = tl.full((BLOCK_H,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_H, D), dtype=tl.float32)
    for start in range(lo, hi, BN):
        offs_n = start + tl.arange(0, BN)  # (BN,) key positions
        n_ok = offs_n < hi
        blk = tl.load(block_tables_ptr + b * stride_bt + offs_n // BLOCK_SIZE, mask=n_ok, other=0).to(tl.int64)
        kv_rows = ((blk * BLOCK_SIZE + offs_n % BLOCK_SIZE) * KVH + kvh) * D  # (BN,)
        k = tl.load(k_cache_ptr + kv_rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)  # (BN, D)
        v = tl.load(v_cache_ptr + kv_rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_H, BN): every head of the group, one K read
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    # an empty split (a short context) leaves l_i = 0: its partial weighs nothing in the reduce
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    if ONE_SPLIT:  # this program saw every key: its partial is the answer, and no reduce is launched
        out = o_ptr + b * stride_ot + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out, (acc / l_safe[:, None]).to(o_ptr.dtype.element_ty), mask=g_ok[:, None])
    else:
        lse = tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf"))  # (BLOCK_H,) log2-sum-exp2
        row = (b * H + heads) * num_splits + split  # (BLOCK_H,) index into (B, H, S)
        tl.store(mid_o_ptr + row[:, None] * D + offs_d[None, :], acc / l_safe[:, None], mask=g_ok[:, None])
        tl.store(mid_lse_ptr + row, lse, mask=g_ok)


@triton.jit
def decode_reduce_kernel(mid_o_ptr, mid_lse_ptr, o_ptr, stride_ot, stride_oh, num_splits,
                         H: tl.constexpr, D: tl.constexpr, BLOCK_S: tl.constexpr):
    b, h = tl.program_id(0), tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)  # (BLOCK_S,) splits
    s_ok = offs_s < num_splits
    offs_d = tl.arange(0, D)
    base = (b * H + h) * num_splits
    lse = tl.load(mid_lse_ptr + base + offs_s, mask=s_ok, other=float("-inf"))  # (BLOCK_S,)
    m = tl.max(lse, axis=0)  # finite: the first split holds key 0
    w = tl.exp2(lse - m)  # (BLOCK_S,), 0 for empty splits
    parts = tl.load(mid_o_ptr + (base + offs_s)[:, None] * D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    out = tl.sum(w[:, None] * parts, axis=0) / tl.sum(w, axis=0)  # (D,)
    tl.store(o_ptr + b * stride_ot + h * stride_oh + offs_d, out.to(o_ptr.dtype.element_ty))


def decode_splits(num_seqs: int, num_kv_heads: int, max_context: int) -> int:
    """How many programs share one sequence's keys: enough to fill the GPU, at least
    MIN_KEYS_PER_SPLIT keys each, at most MAX_SPLITS. A function of sizes only, so a CUDA graph
    captured for (rows, table width) always launches the same grid."""
    by_fill = -(-TARGET_PROGRAMS // max(1, num_seqs * num_kv_heads))
    by_work = -(-max_context // MIN_KEYS_PER_SPLIT)
    return max(1, min(MAX_SPLITS, by_fill, by_work))


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, num_splits: int, scale: float | None = None,
                 out: torch.Tensor | None = None, block_n: int = 32) -> torch.Tensor:
    """Split-KV paged decode. q: (B, H, D), one token per sequence, rows of one head contiguous;
    k_cache, v_cache: (blocks, block_size, KVH, D); block_tables: (B, W) int32; context_lens: (B,) int32.
    Returns (B, H, D). Allocates its (B, H, S, D) float32 partials (inside a CUDA graph they come from
    the graph's pool, at the same address every replay)."""
    B, H, D = q.shape
    _, block_size, KVH, _ = k_cache.shape
    o = torch.empty((B, H, D), dtype=q.dtype, device=q.device) if out is None else out
    if B == 0:
        return o
    group = H // KVH
    if interpreting() and q.dtype == torch.bfloat16:  # the interpreter's tl.dot and bfloat16: see there
        q, k_cache, v_cache = bf16_dot_workaround(q, k_cache, v_cache)
    one = num_splits == 1  # the split kernel writes the output itself: one launch instead of two
    mid_o = torch.empty((B, H, num_splits, D), dtype=torch.float32, device=q.device)  # unused if one
    mid_lse = torch.empty((B, H, num_splits), dtype=torch.float32, device=q.device)
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(D)) * LOG2E
    paged_decode_split_kernel[(B, KVH, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, mid_o, mid_lse, o,
        q.stride(0), q.stride(1), block_tables.stride(0), o.stride(0), o.stride(1), qk_scale, num_splits,
        H=H, KVH=KVH, D=D, BLOCK_SIZE=block_size, GROUP=group,
        BLOCK_H=max(16, triton.next_power_of_2(group)), BN=block_n, ONE_SPLIT=one,
    )
    if not one:
        decode_reduce_kernel[(B, H)](
            mid_o, mid_lse, o, o.stride(0), o.stride(1), num_splits,
            H=H, D=D, BLOCK_S=triton.next_power_of_2(num_splits),
        )
    return o


def paged_decode_one_pass(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                          block_tables: torch.Tensor, context_lens: torch.Tensor,
                          scale: float | None = None) -> torch.Tensor:
    """The one-pass kernel (puzzle 16), for the chapter's comparison. Same arguments as paged_decode."""
    B, H, D = q.shape
    _, block_size, KVH, _ = k_cache.shape
    o = torch.empty((B, H, D), dtype=q.dtype, device=q.device)
    tables = block_tables.contiguous()
    paged_decode_kernel[(B, H)](
        q.contiguous(), k_cache, v_cache, tables, context_lens, o,
        scale if scale is not None else 1.0 / math.sqrt(D), tables.shape[1],
        H=H, KVH=KVH, D=D, BLOCK_SIZE=block_size,
    )
    return o
