"""Puzzle 1: add a constant. The first load and store."""

import torch

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[i] = x[i] + 10            x: (N0,) float32    z: (N0,) float32

One program instance, one block of B0 = N0 elements. Build the offsets with tl.arange(0, B0),
load x at x_ptr + offsets, add, store at z_ptr + offsets.

Engine: every elementwise op of the model (residual adds, activations) is this kernel with another body.
"""


def spec(x):
    return {"z": x + 10.0}


def make_inputs(gen, N0):
    return {"x": torch.randn(N0, generator=gen)}  # (N0,)


def launch(kernel, x, z):
    N0 = x.shape[0]
    kernel[(1,)](x, z, N0, B0=N0)  # a single program covers the whole vector


PUZZLE = Puzzle(
    number=1, name="add", title="Add a constant", chapter="ch0 the model (elementwise ops)",
    kernel="add_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[i] = x[i] + 10 for i < N0 == B0. One program.",
    shapes={"check": dict(N0=32), "bench": dict(N0=1024)}, lines=3,
    hints=("tl.arange(0, B0) gives the offsets 0..B0-1; x_ptr + offsets is a block of pointers.",),
)
