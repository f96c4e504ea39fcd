"""Wrong kernels with one planted bug each, and the diagnosis the checker must give.

Each kernel is a reference solution with one line changed (marked `# BUG`). tests/test_puzzles.py
runs every one through the checker and asserts the diagnosis; the notebook shows one as an example:

    from puzzles import planted, check, get
    print(check(get(2), planted.missing_mask_kernel).report())
"""

from dataclasses import dataclass

import triton
import triton.language as tl

from puzzles.solutions import softmax_kernel


@dataclass(frozen=True)
class Planted:
    name: str
    puzzle: int
    kernel: object
    kinds: tuple[str, ...]  # problem kinds the checker must report
    mentions: str  # a word the first of those problems must contain (the tensor at fault, or the cure)


@triton.jit
def missing_mask_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    offs = tl.program_id(0) * B0 + tl.arange(0, B0)
    x = tl.load(x_ptr + offs)  # BUG: no mask, the last block reads past the end of x
    tl.store(z_ptr + offs, x + 10.0, mask=offs < N0)


@triton.jit
def off_by_one_mask_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    offs = tl.program_id(0) * B0 + tl.arange(0, B0)
    mask = offs <= N0  # BUG: lets element N0 through
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(z_ptr + offs, x + 10.0, mask=mask)


@triton.jit
def wrong_stride_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    offs_i = tl.program_id(0) * B0 + tl.arange(0, B0)
    offs_j = tl.program_id(1) * B1 + tl.arange(0, B1)
    x = tl.load(x_ptr + offs_i, mask=offs_i < N0)
    y = tl.load(y_ptr + offs_j, mask=offs_j < N1)
    mask = (offs_j[:, None] < N1) & (offs_i[None, :] < N0)
    tl.store(z_ptr + offs_i[None, :] * N1 + offs_j[:, None], y[:, None] + x[None, :], mask=mask)  # BUG: column-major


@triton.jit
def wrong_program_id_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    offs_i = tl.program_id(0) * B0 + tl.arange(0, B0)
    offs_j = tl.program_id(0) * B1 + tl.arange(0, B1)  # BUG: axis 0 again, should be tl.program_id(1)
    x = tl.load(x_ptr + offs_i, mask=offs_i < N0)
    y = tl.load(y_ptr + offs_j, mask=offs_j < N1)
    mask = (offs_j[:, None] < N1) & (offs_i[None, :] < N0)
    tl.store(z_ptr + offs_j[:, None] * N0 + offs_i[None, :], y[:, None] + x[None, :], mask=mask)


@triton.jit
def unnormalised_softmax_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    row = x_ptr + tl.program_id(0) * T
    m_i = float("-inf")
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)
        m_i = tl.maximum(m_i, tl.max(tl.load(row + cols, mask=cols < T, other=float("-inf")), axis=0))
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        tl.store(z_ptr + tl.program_id(0) * T + cols, tl.exp(x - m_i), mask=cols < T)  # BUG: never divides by the sum


@triton.jit
def forgot_rescale_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    row = x_ptr + tl.program_id(0) * T
    m_i = float("-inf")
    l_i = 0.0
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=0))
        l_i = l_i + tl.sum(tl.exp(x - m_new), axis=0)  # BUG: the old sum is not rescaled by exp(m_i - m_new)
        m_i = m_new
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        tl.store(z_ptr + tl.program_id(0) * T + cols, tl.exp(x - m_i) / l_i, mask=cols < T)


@triton.jit
def padding_slot_written_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
                                KVH: tl.constexpr, D: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t)  # BUG: slot -1 (padding) is not skipped
    offs = tl.arange(0, KVH)[:, None] * D + tl.arange(0, D)[None, :]
    tl.store(k_cache_ptr + slot * (KVH * D) + offs, tl.load(key_ptr + t * (KVH * D) + offs))
    tl.store(v_cache_ptr + slot * (KVH * D) + offs, tl.load(value_ptr + t * (KVH * D) + offs))


@triton.jit
def past_block_table_kernel(q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, o_ptr, scale,
                            max_blocks, H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr,
                            BLOCK_SIZE: tl.constexpr):
    b, h = tl.program_id(0), tl.program_id(1)
    kvh = h // (H // KVH)
    n = tl.load(context_lens_ptr + b)
    offs_d = tl.arange(0, D)
    offs_t = tl.arange(0, BLOCK_SIZE)
    q = tl.load(q_ptr + (b * H + h) * D + offs_d).to(tl.float32)
    m_i = float("-inf")
    l_i = 0.0
    acc = tl.zeros((D,), dtype=tl.float32)
    for i in range(0, n // BLOCK_SIZE + 1):  # BUG: one block too many when n is a multiple of BLOCK_SIZE
        block_id = tl.load(block_tables_ptr + b * max_blocks + i)
        pos = i * BLOCK_SIZE + offs_t
        rows = ((block_id * BLOCK_SIZE + offs_t[:, None]) * KVH + kvh) * D + offs_d[None, :]
        k = tl.load(k_cache_ptr + rows, mask=pos[:, None] < n, other=0.0).to(tl.float32)
        v = tl.load(v_cache_ptr + rows, mask=pos[:, None] < n, other=0.0).to(tl.float32)
        s = tl.where(pos < n, tl.sum(q[None, :] * k, axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    tl.store(o_ptr + (b * H + h) * D + offs_d, (acc / l_i).to(tl.float16))


PLANTED = [
    Planted("missing mask", 2, missing_mask_kernel, ("out-of-bounds read",), "past its end"),
    Planted("off-by-one mask", 2, off_by_one_mask_kernel, ("out-of-bounds write", "out-of-bounds read"), "z"),
    Planted("wrong stride", 3, wrong_stride_kernel, ("wrong values",), "differ"),
    Planted("wrong program-id mapping", 3, wrong_program_id_kernel,
            ("not written", "written by several programs"), "poison"),
    Planted("unnormalised softmax", 7, unnormalised_softmax_kernel, ("wrong values",), "divide by the sum"),
    Planted("three passes where two are asked", 8, softmax_kernel, ("read too often",), "at most 2"),
    Planted("online softmax without rescaling", 8, forgot_rescale_kernel, ("wrong values",), "rescaled"),
    Planted("padding slot written", 15, padding_slot_written_kernel, ("out-of-bounds write",), "before its start"),
    Planted("reading past a block table", 16, past_block_table_kernel, ("out-of-bounds read",), "block_tables"),
]
