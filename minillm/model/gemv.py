"""A Triton GEMV for the decode step's linear layers at small batch (experimental: no stage uses it yet).

At batch 1 a decode step multiplies one row by every weight matrix of the model: 1.18 GB of Qwen3-0.6B
weights, each byte used for one multiply-add. That is a bandwidth problem, and a small one per call: the
fused qkv matrix is 8 MB, gate_up 12.6 MB, o 4 MB. On the H200 cuBLAS spends 5-12 us on each of them
(about 1-1.6 TB/s, against a 4 TB/s read stream), 0.88 of the step's 1.41 ms of device time
(docs/benchmarks/ch07_h200_2026-12-02/run2/profile_b1.txt).

gemv(x, w) computes x @ w.T for x of at most MAX_M rows. One program owns BLOCK_N output features and
walks K in BLOCK_K steps: it loads a (BLOCK_N, BLOCK_K) tile of W (contiguous along K, so every load is
coalesced), the matching (BLOCK_M, BLOCK_K) slice of x, and accumulates their products in float32 with a
broadcast multiply and a sum over K: no tensor cores, which a handful of rows could not use anyway. The
grid has N / BLOCK_N programs; BLOCK_N is chosen so that there are at least two programs per SM where N
allows, since each program only streams its rows and memory parallelism comes from their number.
Every output element is summed by one program in one order fixed by the tile: the same inputs give the
same bits at every launch, which split-K with atomics would not. (The tile depends on the number of rows,
so a row's result may differ in its last bits between batch sizes.)

Whether it beats cuBLAS is for the H200 to say: scripts/probe_linear.py times it beside cuBLAS and
Inductor's max-autotune, layer by layer, over a sweep of tile sizes. No stage calls it until then.

Checked by: pytest -m ch7 -k gemv (against float64 matmul, in the interpreter on a CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_M = 8  # rows of x: decode batches this small read the weights once for all rows
TARGET_PROGRAMS = 264  # two programs per SM of the H200's 132
MAX_BLOCK_N = 16
TILE_ELEMENTS = 8192  # float32 products a program holds per K step: BLOCK_M * BLOCK_N * BLOCK_K


@triton.jit
def gemv_kernel(x_ptr, w_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :],
                    mask=(offs_n[:, None] < N) & (offs_k[None, :] < K), other=0.0)  # (BLOCK_N, BLOCK_K)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :],
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)  # (BLOCK_M, BLOCK_K)
        prod = x.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]  # (BLOCK_M, BLOCK_N, BLOCK_K)
        acc += tl.sum(prod, axis=2)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def gemv_config(m: int, n: int, k: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_K) for m rows and an (n, k) weight: the largest power-of-two BLOCK_N up to
    MAX_BLOCK_N that still gives TARGET_PROGRAMS programs, then the longest K step that keeps a program's
    products at TILE_ELEMENTS. A program's loads are what the SM has in flight, and a few of them must
    cover the memory's latency (about 30 KB per SM at 4 TB/s): a narrow tile is a long one, so that at
    batch 1 a (2, 2048) tile reads o_proj's rows in one step rather than four."""
    block_n = 1
    while block_n * 2 <= MAX_BLOCK_N and n // (block_n * 2) >= TARGET_PROGRAMS:
        block_n *= 2
    block_m = triton.next_power_of_2(m)
    return block_n, max(16, min(triton.next_power_of_2(k), TILE_ELEMENTS // (block_m * block_n)))


def gemv(x: torch.Tensor, w: torch.Tensor, *, block_n: int | None = None, block_k: int | None = None,
         num_warps: int = 4, out: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T: x (M, K) with M <= MAX_M and unit stride along K, w (N, K) contiguous (an nn.Linear
    weight), the same dtype. Returns (M, N) in that dtype (or fills out). block_n / block_k override
    gemv_config's tile (powers of two)."""
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[1]:
        shapes = f"{tuple(x.shape)} and {tuple(w.shape)}"
        raise ValueError(f"gemv: x (M, K) and w (N, K) with equal K, got {shapes}")
    M, K = x.shape
    N = w.shape[0]
    if not 1 <= M <= MAX_M:
        raise ValueError(f"gemv: x has {M} rows, and this kernel takes 1 to {MAX_M}")
    if x.dtype != w.dtype or x.stride(1) != 1 or not w.is_contiguous():
        raise ValueError("gemv: x and w of one dtype, x with unit stride along K, w contiguous")
    default_n, default_k = gemv_config(M, N, K)
    block_n = default_n if block_n is None else block_n
    block_k = default_k if block_k is None else block_k
    if any(b < 1 or b & (b - 1) for b in (block_n, block_k)):
        raise ValueError(f"gemv: block_n and block_k must be powers of two, got {block_n} and {block_k}")
    if x.device != w.device or (out is not None and out.device != x.device):
        raise ValueError("gemv: x, w and out on one device")
    y = torch.empty((M, N), dtype=x.dtype, device=x.device) if out is None else out
    if y.shape != (M, N) or y.dtype != x.dtype or y.stride(1) != 1:
        raise ValueError(f"gemv: out must be ({M}, {N}) of {x.dtype} with unit stride along N")
    gemv_kernel[(triton.cdiv(N, block_n),)](
        x, w, y, M, N, K, x.stride(0), w.stride(0), y.stride(0),
        BLOCK_M=triton.next_power_of_2(M), BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps)
    return y
