"""Puzzle 5: a reduction longer than a block: loop and accumulate."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[i] = sum_j x[i, j]        x: (N0, T) float32 row-major    z: (N0,) float32

Each program sums B0 rows. A row has T elements, more than one block of B1, so walk it in a loop:
for start in range(0, T, B1), load a (B0, B1) tile (masked on both axes), add its row sums
(tl.sum(tile, axis=1)) into a float32 accumulator of shape (B0,), and store once at the end.

Engine: RMSNorm's mean(x^2) over the hidden size, softmax denominators, and every attention kernel's
walk over the keys are this loop (chapters 0 and 7).
"""


def spec(x):
    return {"z": x.sum(dim=1)}  # (N0,)


def make_inputs(gen, N0, T):
    return {"x": torch.randn(N0, T, generator=gen)}  # (N0, T)


def launch(kernel, x, z):
    N0, T = x.shape
    B0, B1 = (4, 1024) if x.is_cuda else (4, 128)
    kernel[(triton.cdiv(N0, B0),)](x, z, N0, T, B0=B0, B1=B1)


PUZZLE = Puzzle(
    number=5, name="long_sum", title="Long row sum", chapter="ch0 RMSNorm, ch7 attention loops",
    kernel="long_sum_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[i] = sum_j x[i, j]; x: (N0, T); B0 rows per program; loop over T in steps of B1.",
    shapes={"check": dict(N0=10, T=1300), "bench": dict(N0=4096, T=8192)}, lines=10,
    hints=("tl.zeros((B0,), dtype=tl.float32) makes the accumulator.",
           "A Python `for` over range(...) inside a @triton.jit kernel becomes a device loop.",
           "Masked loads should use other=0.0 so the padding adds nothing."),
)
