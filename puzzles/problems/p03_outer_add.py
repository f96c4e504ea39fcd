"""Puzzle 3: a 2-D grid of 2-D blocks: outer sum."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[j, i] = x[i] + y[j]       x: (N0,)  y: (N1,)  z: (N1, N0) float32, row-major (stride N0 along j)

Grid (cdiv(N0, B0), cdiv(N1, B1)): program (pid0, pid1) owns the tile of columns pid0*B0.. and rows
pid1*B1... Make a column vector and a row vector of offsets (offs[:, None], offs[None, :]) and let
broadcasting build the (B1, B0) tile of pointers and the (B1, B0) mask.

Engine: attention scores are tiles of exactly this shape, one query block by one key block (chapter 7).
"""


def spec(x, y):
    return {"z": y[:, None] + x[None, :]}  # (N1, N0)


def make_inputs(gen, N0, N1):
    return {"x": torch.randn(N0, generator=gen), "y": torch.randn(N1, generator=gen)}


def launch(kernel, x, y, z):
    N0, N1 = x.shape[0], y.shape[0]
    B0, B1 = (64, 64) if x.is_cuda else (32, 16)
    kernel[(triton.cdiv(N0, B0), triton.cdiv(N1, B1))](x, y, z, N0, N1, B0=B0, B1=B1)


PUZZLE = Puzzle(
    number=3, name="outer_add", title="Outer sum in 2-D blocks", chapter="ch7 attention tiles",
    kernel="outer_add_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[j, i] = x[i] + y[j]; z: (N1, N0); grid (cdiv(N0, B0), cdiv(N1, B1)).",
    shapes={"check": dict(N0=100, N1=70), "bench": dict(N0=8192, N1=8192)}, lines=9,
    hints=("tl.program_id(1) is the second grid axis.",
           "Element (j, i) of a row-major (N1, N0) tensor lives at j * N0 + i.",
           "The mask of a tile is the & of a row mask and a column mask, broadcast together."),
)
