"""Puzzle 2: many program instances over a ragged length, with a mask."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[i] = x[i] + 10            x: (N0,) float32    z: (N0,) float32

N0 is not a multiple of the block size B0: the grid has cdiv(N0, B0) programs and program pid covers
elements pid*B0 .. pid*B0 + B0 - 1. The last block hangs over the end, so both the load and the store
need mask = offsets < N0.

Engine: from chapter 2 on, a batch is one flat run of T tokens (no padding), and T is whatever the
scheduler picked; every kernel over tokens is masked like this one.
"""


def spec(x):
    return {"z": x + 10.0}


def make_inputs(gen, N0):
    return {"x": torch.randn(N0, generator=gen)}  # (N0,)


def launch(kernel, x, z):
    N0 = x.shape[0]
    B0 = 1024 if x.is_cuda else 256
    kernel[(triton.cdiv(N0, B0),)](x, z, N0, B0=B0)


PUZZLE = Puzzle(
    number=2, name="add_masked", title="Masked blocks over a ragged length", chapter="ch2 flat token batches",
    kernel="add_masked_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[i] = x[i] + 10 for i < N0; grid (cdiv(N0, B0),); the last block needs a mask.",
    shapes={"check": dict(N0=2000), "bench": dict(N0=(1 << 24) + 3)}, lines=5,
    hints=("tl.program_id(0) is this instance's index in the grid.",
           "tl.load(ptrs, mask=m) skips the lanes where m is False; tl.store(ptrs, v, mask=m) too."),
)
