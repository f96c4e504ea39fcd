"""Puzzle 10: rotary position embedding, the Llama (rotate_half, "neox") layout."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    x1, x2 = x[..., :D/2], x[..., D/2:]
    z[..., :D/2] = x1 * cos - x2 * sin
    z[..., D/2:] = x2 * cos + x1 * sin
    x: (T, H, D) float32    cos, sin: (T, D/2) float32 (already gathered at each token's position)
    z: (T, H, D) float32

One program per token handles all H heads: a (BH, D/2) tile for each half, where BH is H rounded up
to a power of two (mask the heads). cos and sin are shared by every head of the token, so load them
once as a (1, D/2) row and broadcast.

Engine: applied to q and k after the projections, at positions[T] of the flat batch (chapter 0;
with paged KV it is what makes a cached key valid for later tokens, chapter 2).
"""


def spec(x, cos, sin):
    cos = torch.cat([cos, cos], dim=-1)[:, None, :]  # (T, 1, D)
    sin = torch.cat([sin, sin], dim=-1)[:, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    rotate_half = torch.cat([-x2, x1], dim=-1)  # (T, H, D)
    return {"z": x * cos + rotate_half * sin}


def make_inputs(gen, T, H, D, base=10000.0):
    positions = torch.randint(0, 4096, (T,), generator=gen)  # (T,) any order: a flat batch mixes sequences
    inv_freq = 1.0 / base ** (torch.arange(0, D, 2) / D)  # (D/2,)
    angles = positions[:, None].float() * inv_freq[None, :]  # (T, D/2)
    return {"x": torch.randn(T, H, D, generator=gen), "cos": angles.cos(), "sin": angles.sin()}


def launch(kernel, x, cos, sin, z):
    T, H, D = x.shape
    kernel[(T,)](x, cos, sin, z, H, D=D, BH=triton.next_power_of_2(H))


PUZZLE = Puzzle(
    number=10, name="rotary", title="Rotary embedding (rotate_half)", chapter="ch0 the model, ch2 positions",
    kernel="rotary_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="rotate_half rotary; x, z: (T, H, D); cos, sin: (T, D/2); grid (T,), all heads per program.",
    shapes={"check": dict(T=10, H=6, D=64), "bench": dict(T=8192, H=32, D=128)}, lines=14,
    hints=("Element (t, h, d) of x lives at (t * H + h) * D + d.",
           "Offsets of the second half are the first half's plus D // 2."),
)
