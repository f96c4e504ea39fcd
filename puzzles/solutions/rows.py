"""Reference kernels for puzzles 7-10: one row per program: softmax, online softmax, RMSNorm, rotary.

Check one with `python -m puzzles check 8 --solution`.
"""

import triton
import triton.language as tl


@triton.jit
def softmax_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    row = x_ptr + tl.program_id(0) * T
    m_i = float("-inf")
    for start in range(0, T, B1):  # pass 1: the row max
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        m_i = tl.maximum(m_i, tl.max(x, axis=0))
    total = 0.0
    for start in range(0, T, B1):  # pass 2: the sum of exponentials
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        total += tl.sum(tl.exp(x - m_i), axis=0)
    for start in range(0, T, B1):  # pass 3: normalise and write
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        tl.store(z_ptr + tl.program_id(0) * T + cols, tl.exp(x - m_i) / total, mask=cols < T)


@triton.jit
def softmax_online_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    row = x_ptr + tl.program_id(0) * T
    m_i = float("-inf")
    l_i = 0.0
    for start in range(0, T, B1):  # pass 1: max and sum together, rescaling the sum when the max grows
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=0))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m_i = m_new
    for start in range(0, T, B1):  # pass 2: write
        cols = start + tl.arange(0, B1)
        x = tl.load(row + cols, mask=cols < T, other=float("-inf"))
        tl.store(z_ptr + tl.program_id(0) * T + cols, tl.exp(x - m_i) / l_i, mask=cols < T)


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, z_ptr, D, eps, BD: tl.constexpr):
    t = tl.program_id(0)
    offs = tl.arange(0, BD)  # (BD,)
    mask = offs < D
    x = tl.load(x_ptr + t * D + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
    tl.store(z_ptr + t * D + offs, (x * rstd * w).to(tl.float16), mask=mask)


@triton.jit
def rotary_kernel(x_ptr, cos_ptr, sin_ptr, z_ptr, H, D: tl.constexpr, BH: tl.constexpr):
    t = tl.program_id(0)
    HALF: tl.constexpr = D // 2
    heads = tl.arange(0, BH)  # (BH,)
    dims = tl.arange(0, HALF)  # (HALF,)
    first = (t * H + heads[:, None]) * D + dims[None, :]  # (BH, HALF) offsets of x1; x2 is HALF further
    mask = heads[:, None] < H
    cos = tl.load(cos_ptr + t * HALF + dims)[None, :]  # (1, HALF), shared by all heads
    sin = tl.load(sin_ptr + t * HALF + dims)[None, :]
    x1 = tl.load(x_ptr + first, mask=mask)
    x2 = tl.load(x_ptr + first + HALF, mask=mask)
    tl.store(z_ptr + first, x1 * cos - x2 * sin, mask=mask)
    tl.store(z_ptr + first + HALF, x2 * cos + x1 * sin, mask=mask)
