"""Reference kernels for puzzles 1-6: loads, stores, masks, 2-D tiles, loops and reductions.

Check one with `python -m puzzles check 3 --solution`.
"""

import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    offs = tl.arange(0, B0)  # (B0,)
    x = tl.load(x_ptr + offs)
    tl.store(z_ptr + offs, x + 10.0)


@triton.jit
def add_masked_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * B0 + tl.arange(0, B0)  # (B0,)
    mask = offs < N0
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(z_ptr + offs, x + 10.0, mask=mask)


@triton.jit
def outer_add_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    offs_i = tl.program_id(0) * B0 + tl.arange(0, B0)  # (B0,) columns
    offs_j = tl.program_id(1) * B1 + tl.arange(0, B1)  # (B1,) rows
    x = tl.load(x_ptr + offs_i, mask=offs_i < N0)
    y = tl.load(y_ptr + offs_j, mask=offs_j < N1)
    z = y[:, None] + x[None, :]  # (B1, B0)
    mask = (offs_j[:, None] < N1) & (offs_i[None, :] < N0)
    tl.store(z_ptr + offs_j[:, None] * N0 + offs_i[None, :], z, mask=mask)


@triton.jit
def mul_relu_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    offs_i = tl.program_id(0) * B0 + tl.arange(0, B0)  # (B0,)
    offs_j = tl.program_id(1) * B1 + tl.arange(0, B1)  # (B1,)
    x = tl.load(x_ptr + offs_i, mask=offs_i < N0)
    y = tl.load(y_ptr + offs_j, mask=offs_j < N1)
    z = tl.maximum(y[:, None] * x[None, :], 0.0)  # (B1, B0), never written before the relu
    mask = (offs_j[:, None] < N1) & (offs_i[None, :] < N0)
    tl.store(z_ptr + offs_j[:, None] * N0 + offs_i[None, :], z, mask=mask)


@triton.jit
def long_sum_kernel(x_ptr, z_ptr, N0, T, B0: tl.constexpr, B1: tl.constexpr):
    rows = tl.program_id(0) * B0 + tl.arange(0, B0)  # (B0,)
    acc = tl.zeros((B0,), dtype=tl.float32)
    for start in range(0, T, B1):
        cols = start + tl.arange(0, B1)  # (B1,)
        mask = (rows[:, None] < N0) & (cols[None, :] < T)
        x = tl.load(x_ptr + rows[:, None] * T + cols[None, :], mask=mask, other=0.0)  # (B0, B1)
        acc += tl.sum(x, axis=1)
    tl.store(z_ptr + rows, acc, mask=rows < N0)


@triton.jit
def mul_relu_backward_kernel(x_ptr, y_ptr, dz_ptr, dx_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    offs_i = tl.program_id(0) * B0 + tl.arange(0, B0)  # (B0,)
    x = tl.load(x_ptr + offs_i, mask=offs_i < N0, other=0.0)
    acc = tl.zeros((B0,), dtype=tl.float32)
    for start in range(0, N1, B1):
        offs_j = start + tl.arange(0, B1)  # (B1,)
        y = tl.load(y_ptr + offs_j, mask=offs_j < N1, other=0.0)
        mask = (offs_j[:, None] < N1) & (offs_i[None, :] < N0)
        dz = tl.load(dz_ptr + offs_j[:, None] * N0 + offs_i[None, :], mask=mask, other=0.0)  # (B1, B0)
        active = y[:, None] * x[None, :] > 0  # where the relu let the gradient through
        acc += tl.sum(tl.where(active, dz * y[:, None], 0.0), axis=0)
    tl.store(dx_ptr + offs_i, acc, mask=offs_i < N0)
