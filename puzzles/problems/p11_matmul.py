"""Puzzle 11: blocked matrix multiply with tl.dot."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    c = a @ b         a: (M, K) float16    b: (K, N) float16    c: (M, N) float16, accumulate in float32

Grid (cdiv(M, BM), cdiv(N, BN)): each program computes one (BM, BN) tile of c. Loop over K in steps
of BK: load a (BM, BK) tile of a and a (BK, BN) tile of b (masked: M, N and K are all ragged here),
acc += tl.dot(a_tile, b_tile), and store acc.to(tl.float16) at the end.

Engine: every linear layer (q/k/v/o projections, the MLP, the LM head). At decode time M is the
batch size; at prefill it is the number of tokens (chapters 0, 6 and 7).
"""


def spec(a, b):
    return {"c": (a.float() @ b.float()).half()}  # (M, N)


def make_inputs(gen, M, N, K):
    return {"a": torch.randn(M, K, generator=gen).half(), "b": torch.randn(K, N, generator=gen).half()}


def launch(kernel, a, b, c):
    (M, K), N = a.shape, b.shape[1]
    BM, BN, BK, warps = (128, 128, 64, 8) if a.is_cuda else (32, 32, 32, 4)
    kernel[(triton.cdiv(M, BM), triton.cdiv(N, BN))](a, b, c, M, N, K, BM=BM, BN=BN, BK=BK, num_warps=warps)


def cost(a, b, c):
    return {"flops": 2 * a.shape[0] * a.shape[1] * b.shape[1]}


PUZZLE = Puzzle(
    number=11, name="matmul", title="Matrix multiply with tl.dot", chapter="ch0 linear layers, ch6-7",
    kernel="matmul_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="c = a @ b; a: (M, K), b: (K, N) float16; float32 accumulator; grid (cdiv(M, BM), cdiv(N, BN)).",
    shapes={"check": dict(M=300, N=200, K=80), "bench": dict(M=4096, N=4096, K=4096)}, lines=14,
    hints=("tl.dot needs every tile dimension >= 16; the launch picks such blocks.",
           "Masked loads with other=0.0: a zero in the K padding adds nothing to the product."),
    tolerance={"c": (2e-2, 1e-2)}, cost=cost,
)
