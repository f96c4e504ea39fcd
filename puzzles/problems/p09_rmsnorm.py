"""Puzzle 9: RMSNorm, one row per program, float32 inside a float16 kernel."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[t, :] = x[t, :] * rsqrt(mean_d(x[t, d]^2) + eps) * weight[:]
    x: (T, D) float16    weight: (D,) float16    z: (T, D) float16    eps: float

One program per token row; D is the hidden size, not a power of two, so the block is
BD = next_power_of_2(D) with a mask. Compute in float32 (x.to(tl.float32)) and cast the result back
to float16 on the store: float16 squares of activations overflow and lose the small ones.

Engine: the model's RMSNorm before attention and before the MLP in every layer (chapter 0).
"""


def spec(x, weight, eps):
    xf = x.float()
    return {"z": (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).half()}


def make_inputs(gen, T, D):
    return {"x": (3 * torch.randn(T, D, generator=gen)).half(),  # (T, D)
            "weight": (1 + 0.1 * torch.randn(D, generator=gen)).half(),  # (D,)
            "eps": 1e-6}


def launch(kernel, x, weight, eps, z):
    T, D = x.shape
    kernel[(T,)](x, weight, z, D, eps, BD=triton.next_power_of_2(D))


PUZZLE = Puzzle(
    number=9, name="rmsnorm", title="RMSNorm", chapter="ch0 the model",
    kernel="rmsnorm_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="z[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * w in float32; x, z: (T, D) float16; grid (T,).",
    shapes={"check": dict(T=10, D=96), "bench": dict(T=8192, D=4096)}, lines=9,
    hints=("The mean divides by D, not by BD: masked lanes must load as 0.",
           "tl.rsqrt(v) is 1 / sqrt(v)."),
)
