"""Puzzle 4: fuse an elementwise function into a 2-D outer product."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[j, i] = relu(x[i] * y[j])     x: (N0,)  y: (N1,)  z: (N1, N0) float32

Same tiles as puzzle 3, one more op before the store. In torch, relu(outer(x, y)) writes the
product to memory and reads it back; the fused kernel never materialises it. That is the whole point
of fusion: memory traffic, not arithmetic, sets the time of elementwise work.

Engine: the MLP's silu(gate) * up and the attention score scaling are fused the same way (chapters 6-7).
"""


def spec(x, y):
    return {"z": torch.relu(y[:, None] * x[None, :])}  # (N1, N0)


def make_inputs(gen, N0, N1):
    return {"x": torch.randn(N0, generator=gen), "y": torch.randn(N1, generator=gen)}


def launch(kernel, x, y, z):
    N0, N1 = x.shape[0], y.shape[0]
    B0, B1 = (64, 64) if x.is_cuda else (32, 16)
    kernel[(triton.cdiv(N0, B0), triton.cdiv(N1, B1))](x, y, z, N0, N1, B0=B0, B1=B1)


PUZZLE = Puzzle(
    number=4, name="mul_relu", title="Fused relu(outer product)", chapter="ch6 fusion",
    kernel="mul_relu_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[j, i] = relu(x[i] * y[j]); z: (N1, N0); grid (cdiv(N0, B0), cdiv(N1, B1)).",
    shapes={"check": dict(N0=100, N1=70), "bench": dict(N0=8192, N1=8192)}, lines=9,
    hints=("relu is tl.maximum(v, 0.0) (or tl.where(v > 0, v, 0.0)).",),
)
