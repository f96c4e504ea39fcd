"""Puzzle 12: matmul against int4 weights, unpacked on the fly."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    c = a @ W,  W[k, n] = (q[k, n] - 8) * scales[k // G, n]          (G = 32, the group size)
    a: (M, K) float16       w_packed: (K/8, N) int32: 8 four-bit q's per word, q[k, n] sits in bits
    scales: (K/G, N) float16                           4*(k%8) .. 4*(k%8)+3 of w_packed[k // 8, n]
    c: (M, N) float16; K is a multiple of BK and of G

Like puzzle 11, but b's tile is unpacked in registers: load w_packed at row k // 8 for each k of the
tile (neighbouring k's load the same word), shift right by 4 * (k % 8), keep the low 4 bits (& 0xF),
subtract 8, multiply by the group's scale, and feed the float16 tile to tl.dot.

Engine: decode reads every weight once per step, so its time is weight bytes / HBM bandwidth;
four-bit weights move a quarter of the bytes of float16 ones (the roofline of chapter 7).
"""

G = 32  # quantization group size along K


def spec(a, w_packed, scales):
    K = w_packed.shape[0] * 8
    shifts = 4 * torch.arange(8, device=w_packed.device)  # (8,)
    q = (w_packed[:, None, :] >> shifts[None, :, None]) & 0xF  # (K/8, 8, N): nibble j of word r is k = 8r + j
    w = (q.reshape(K, -1) - 8).float() * scales.float().repeat_interleave(G, dim=0)  # (K, N)
    return {"c": (a.float() @ w).half()}


def make_inputs(gen, M, N, K):
    q = torch.randint(0, 16, (K // 8, 8, N), generator=gen)  # (K/8, 8, N) the 4-bit values
    words = (q << (4 * torch.arange(8))[None, :, None]).sum(dim=1)  # (K/8, N) int64, < 2**32
    w_packed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # same bits, signed
    return {"a": torch.randn(M, K, generator=gen).half(), "w_packed": w_packed,
            "scales": (0.02 * torch.rand(K // G, N, generator=gen) + 0.01).half()}


def launch(kernel, a, w_packed, scales, c):
    (M, K), N = a.shape, w_packed.shape[1]
    BM, BN, BK = (64, 128, 64) if a.is_cuda else (16, 32, 32)
    kernel[(triton.cdiv(M, BM), triton.cdiv(N, BN))](a, w_packed, scales, c, M, N, K, G=G, BM=BM, BN=BN, BK=BK)


def cost(a, w_packed, scales, c):
    return {"flops": 2 * a.shape[0] * a.shape[1] * w_packed.shape[1]}


PUZZLE = Puzzle(
    number=12, name="int4_matmul", title="Matmul with int4 weights", chapter="ch7 decode roofline",
    kernel="int4_matmul_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="c = a @ ((q - 8) * scale); q: 4-bit, 8 per int32 word of w: (K/8, N); scale: (K/G, N).",
    shapes={"check": dict(M=80, N=300, K=128), "bench": dict(M=64, N=8192, K=8192)}, lines=18,
    hints=("offs_k // 8 picks the word, (offs_k % 8) * 4 the shift: both are (BK,) vectors, use [:, None].",
           "The arithmetic shift of a negative int32 copies the sign bit; & 0xF removes it."),
    tolerance={"c": (2e-2, 1e-2)}, cost=cost,
)
