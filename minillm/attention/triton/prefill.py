"""Varlen causal FlashAttention over the paged cache: prefill, chunked prefill and mixed steps.

Puzzle 14 attends over contiguous K/V of this step's tokens. The engine's prefill must also see keys
that earlier steps cached (a prefix-cache hit, the earlier chunks of a chunked prefill), so this kernel
reads every key through the block table, as vLLM's prefix-prefill kernel does:

  program (m, h, b): query rows m*BM .. m*BM+BM-1 of sequence b's new tokens, query head h
  the sequence's new tokens sit at [cu_seqlens[b], cu_seqlens[b+1]) of the flat batch; its context
  (cached + new) is context_lens[b], so new row i is at absolute position context_len - q_len + i
  loop over key tiles of BN positions: block ids from the table, rows of (block * block_size + offset)
  online softmax in base 2 (the scale folded with log2 e), one tl.dot for scores, one for the values

Causal block skipping: the loop stops at the tile's last query position, so a tile of early rows never
reads the keys that only later rows see. GQA: query head h reads KV head h // (H // KVH). A decode row
(q_len 1) is just a short sequence: a mixed step is one launch.

Checked by: pytest -m ch7 -k prefill (float64 reference over ragged lengths, block sizes, GQA ratios,
head dims, cached prefixes).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from minillm.attention.triton import bf16_dot_workaround, interpreting

LOG2E = 1.4426950408889634


@triton.jit
def paged_prefill_kernel(
    q_ptr, o_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_seqlens_ptr, context_lens_ptr,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_bt, qk_scale,
    H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr,
):
    m_block, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(cu_seqlens_ptr + b)
    q_len = tl.load(cu_seqlens_ptr + b + 1) - q_start
    if m_block * BM >= q_len:  # this sequence has fewer new tokens than the longest one
        return
    ctx = tl.load(context_lens_ptr + b)
    kvh = h // (H // KVH)
    offs_m = m_block * BM + tl.arange(0, BM)  # (BM,) new-token rows of this sequence
    offs_d = tl.arange(0, D)  # (D,)
    row_ok = offs_m < q_len
    q_pos = ctx - q_len + offs_m  # (BM,) absolute positions: cached keys come first
    q = tl.load(q_ptr + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)  # (BM, D)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, D), dtype=tl.float32)
    end = tl.minimum(ctx, ctx - q_len + (m_block + 1) * BM)  # causal: no key past the tile's last row
    for start in range(0, end, BN):
        offs_n = start + tl.arange(0, BN)  # (BN,) key positions
        n_ok = offs_n < end
        blk = tl.load(block_tables_ptr + b * stride_bt + offs_n // BLOCK_SIZE, mask=n_ok, other=0).to(tl.int64)
        kv_rows = ((blk * BLOCK_SIZE + offs_n % BLOCK_SIZE) * KVH + kvh) * D  # (BN,) element offsets
        k = tl.load(k_cache_ptr + kv_rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)  # (BN, D)
        v = tl.load(v_cache_ptr + kv_rows[:, None] + offs_d[None, :], mask=n_ok[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # (BM, BN), in log2 units
        s = tl.where((offs_n[None, :] <= q_pos[:, None]) & n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: key 0 is in the first tile of every row
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + (q_start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


# Hopper: 128-row query tiles with 8 warps and a deep pipeline are the usual winners at head_dim 128;
# the smaller tiles serve short sequences and head_dim 64. Autotuned per (head_dim, block size).
CONFIGS = [
    triton.Config({"BM": bm, "BN": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [
        (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 4), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 4),
    ]
]
_autotuned = triton.autotune(CONFIGS, key=["D", "BLOCK_SIZE", "H", "KVH"])(paged_prefill_kernel)


def paged_prefill(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                  cu_seqlens_q: torch.Tensor, context_lens: torch.Tensor, max_q_len: int,
                  scale: float | None = None, out: torch.Tensor | None = None,
                  block_m: int = 16, block_n: int = 16) -> torch.Tensor:
    """q: (T, H, D), rows of one head contiguous; k_cache, v_cache: (blocks, block_size, KVH, D);
    block_tables: (B, W) int32; cu_seqlens_q: (B+1,) int32; context_lens: (B,) int32 (cached + new);
    max_q_len: the most new tokens of one sequence (the grid). Returns (T, H, D).
    block_m, block_n: the tile sizes in the interpreter (a GPU autotunes them)."""
    T, H, D = q.shape
    _, block_size, KVH, _ = k_cache.shape
    B = context_lens.shape[0]
    o = torch.empty((T, H, D), dtype=q.dtype, device=q.device) if out is None else out
    if T == 0:
        return o
    if interpreting() and q.dtype == torch.bfloat16:  # the interpreter's tl.dot and bfloat16: see there
        q, k_cache, v_cache = bf16_dot_workaround(q, k_cache, v_cache)
    qk_scale = (scale if scale is not None else 1.0 / math.sqrt(D)) * LOG2E
    args = (q, o, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens,
            q.stride(0), q.stride(1), o.stride(0), o.stride(1), block_tables.stride(0), qk_scale)
    consts = dict(H=H, KVH=KVH, D=D, BLOCK_SIZE=block_size)
    if interpreting():
        paged_prefill_kernel[(triton.cdiv(max_q_len, block_m), H, B)](*args, **consts, BM=block_m, BN=block_n)
    else:
        _autotuned[lambda meta: (triton.cdiv(max_q_len, meta["BM"]), H, B)](*args, **consts)
    return o
