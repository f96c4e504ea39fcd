"""Reference kernels for puzzles 11-12: tl.dot matmul, then the same with int4 weights unpacked in registers.

Check one with `python -m puzzles check 12 --solution`.
"""

import triton
import triton.language as tl


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)  # (BM,)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)  # (BN,)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for start in range(0, K, BK):
        offs_k = start + tl.arange(0, BK)  # (BK,)
        a = tl.load(a_ptr + offs_m[:, None] * K + offs_k[None, :],
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)  # (BM, BK)
        b = tl.load(b_ptr + offs_k[:, None] * N + offs_n[None, :],
                    mask=(offs_k[:, None] < K) & (offs_n[None, :] < N), other=0.0)  # (BK, BN)
        acc += tl.dot(a, b)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(tl.float16), mask=mask)


@triton.jit
def int4_matmul_kernel(a_ptr, w_ptr, scale_ptr, c_ptr, M, N, K, G: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)  # (BM,)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)  # (BN,)
    mask_n = offs_n[None, :] < N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for start in range(0, K, BK):  # K is a multiple of BK: no mask along K
        offs_k = start + tl.arange(0, BK)  # (BK,)
        a = tl.load(a_ptr + offs_m[:, None] * K + offs_k[None, :], mask=offs_m[:, None] < M, other=0.0)
        words = tl.load(w_ptr + (offs_k[:, None] // 8) * N + offs_n[None, :], mask=mask_n, other=0)  # (BK, BN)
        q = (words >> ((offs_k[:, None] % 8) * 4)) & 0xF
        scale = tl.load(scale_ptr + (offs_k[:, None] // G) * N + offs_n[None, :], mask=mask_n, other=0.0)
        w = ((q - 8).to(tl.float32) * scale.to(tl.float32)).to(tl.float16)  # (BK, BN) dequantized
        acc += tl.dot(a, w)
    mask = (offs_m[:, None] < M) & mask_n
    tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(tl.float16), mask=mask)
