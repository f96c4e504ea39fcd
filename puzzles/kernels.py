"""Your kernels. Fill in one stub at a time, then run `python -m puzzles check N`.

Each stub keeps the signature its launch wrapper calls (see puzzles/problems/pNN_*.py); delete the
`raise` line and write the body. `python -m puzzles show N` prints the statement and the torch spec.
Everything runs on a CPU through Triton's interpreter, and unchanged, compiled, on a CUDA GPU.
To start a puzzle over, `python -m puzzles reset N` puts its stub back and leaves your other kernels.
The reference solutions are in puzzles/solutions/: try not to look.
"""

import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    # Puzzle 1. z[i] = x[i] + 10 for i < N0 == B0. One program.
    raise NotImplementedError("Puzzle 1 (add) is not written yet: roughly 3 lines.")


@triton.jit
def add_masked_kernel(x_ptr, z_ptr, N0, B0: tl.constexpr):
    # Puzzle 2. z[i] = x[i] + 10 for i < N0; grid (cdiv(N0, B0),); the last block needs a mask.
    raise NotImplementedError("Puzzle 2 (add_masked) is not written yet: roughly 5 lines.")


@triton.jit
def outer_add_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    # Puzzle 3. z[j, i] = x[i] + y[j]; z: (N1, N0); grid (cdiv(N0, B0), cdiv(N1, B1)).
    raise NotImplementedError("Puzzle 3 (outer_add) is not written yet: roughly 9 lines.")


@triton.jit
def mul_relu_kernel(x_ptr, y_ptr, z_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    # Puzzle 4. z[j, i] = relu(x[i] * y[j]); z: (N1, N0); grid (cdiv(N0, B0), cdiv(N1, B1)).
    raise NotImplementedError("Puzzle 4 (mul_relu) is not written yet: roughly 9 lines.")


@triton.jit
def long_sum_kernel(x_ptr, z_ptr, N0, T, B0: tl.constexpr, B1: tl.constexpr):
    # Puzzle 5. z[i] = sum_j x[i, j]; x: (N0, T); B0 rows per program; loop over T in steps of B1.
    raise NotImplementedError("Puzzle 5 (long_sum) is not written yet: roughly 10 lines.")


@triton.jit
def mul_relu_backward_kernel(x_ptr, y_ptr, dz_ptr, dx_ptr, N0, N1, B0: tl.constexpr, B1: tl.constexpr):
    # Puzzle 6. dx[i] = sum_j dz[j, i] * y[j] * (x[i] * y[j] > 0); dz: (N1, N0); grid (cdiv(N0, B0),).
    raise NotImplementedError("Puzzle 6 (mul_relu_backward) is not written yet: roughly 14 lines.")


@triton.jit
def softmax_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    # Puzzle 7. Row softmax of x: (N0, T), one program per row, three passes of blocks of B1.
    raise NotImplementedError("Puzzle 7 (softmax) is not written yet: roughly 20 lines.")


@triton.jit
def softmax_online_kernel(x_ptr, z_ptr, N0, T, B1: tl.constexpr):
    # Puzzle 8. The same softmax reading x only twice: running max and rescaled running sum.
    raise NotImplementedError("Puzzle 8 (softmax_online) is not written yet: roughly 18 lines.")


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, z_ptr, D, eps, BD: tl.constexpr):
    # Puzzle 9. z[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w in float32; x, z: (T, D) float16; grid (T,).
    raise NotImplementedError("Puzzle 9 (rmsnorm) is not written yet: roughly 9 lines.")


@triton.jit
def rotary_kernel(x_ptr, cos_ptr, sin_ptr, z_ptr, H, D: tl.constexpr, BH: tl.constexpr):
    # Puzzle 10. rotate_half rotary; x, z: (T, H, D); cos, sin: (T, D/2); grid (T,), all heads per program.
    raise NotImplementedError("Puzzle 10 (rotary) is not written yet: roughly 14 lines.")


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # Puzzle 11. c = a @ b; a: (M, K), b: (K, N) float16; float32 accumulator; grid (cdiv(M, BM), cdiv(N, BN)).
    raise NotImplementedError("Puzzle 11 (matmul) is not written yet: roughly 14 lines.")


@triton.jit
def int4_matmul_kernel(a_ptr, w_ptr, scale_ptr, c_ptr, M, N, K, G: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # Puzzle 12. c = a @ ((q - 8) * scale); q: 4-bit, 8 per int32 word of w: (K/8, N); scale: (K/G, N).
    raise NotImplementedError("Puzzle 12 (int4_matmul) is not written yet: roughly 18 lines.")


@triton.jit
def flash_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, Tq, Tk, scale,
                           D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    # Puzzle 13. o = softmax(q @ k^T * scale) @ v; q: (Tq, D), k, v: (Tk, D); grid (cdiv(Tq, BM),).
    raise NotImplementedError("Puzzle 13 (flash_attention) is not written yet: roughly 24 lines.")


@triton.jit
def prefill_attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr, cu_seqlens_ptr, scale, H: tl.constexpr,
                             KVH: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    # Puzzle 14. Causal varlen GQA attention; q, o: (T, H, D), k, v: (T, KVH, D); grid (cdiv(max_seqlen, BM), H, B).
    raise NotImplementedError("Puzzle 14 (prefill_attention) is not written yet: roughly 32 lines.")


@triton.jit
def store_kvcache_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
                         KVH: tl.constexpr, D: tl.constexpr):
    # Puzzle 15. k_cache.view(-1, KVH, D)[slot_mapping[t]] = key[t] (same for v), skipping slot -1; grid (T,).
    raise NotImplementedError("Puzzle 15 (store_kvcache) is not written yet: roughly 8 lines.")


@triton.jit
def paged_decode_kernel(q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, context_lens_ptr, o_ptr, scale,
                        max_blocks, H: tl.constexpr, KVH: tl.constexpr, D: tl.constexpr,
                        BLOCK_SIZE: tl.constexpr):
    # Puzzle 16. One query token per sequence against its paged K/V; q, o: (B, H, D); grid (B, H).
    raise NotImplementedError("Puzzle 16 (paged_decode) is not written yet: roughly 26 lines.")
