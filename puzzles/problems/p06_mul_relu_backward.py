"""Puzzle 6: the backward of puzzle 4: the gradient of a broadcast is a reduction."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    forward:   z[j, i] = relu(x[i] * y[j])                      x: (N0,)  y: (N1,)
    backward:  dx[i] = sum_j dz[j, i] * y[j] * (x[i] * y[j] > 0)  dz: (N1, N0)   dx: (N0,) float32

x was broadcast along j in the forward pass, so its gradient sums over j. Each program owns B0
columns i and loops over the rows j in blocks of B1, accumulating like puzzle 5 but along axis 0.

Engine: the engine only runs forward, but this is the pattern of attention's P @ V: a tile of weights
times a tile of values, summed over the key axis (chapter 7).
"""


def spec(x, y, dz):
    x = x.clone().requires_grad_(True)
    z = torch.relu(y[:, None] * x[None, :])  # (N1, N0)
    (dx,) = torch.autograd.grad(z, x, dz)
    return {"dx": dx.detach()}


def make_inputs(gen, N0, N1):
    return {"x": torch.randn(N0, generator=gen), "y": torch.randn(N1, generator=gen),
            "dz": torch.randn(N1, N0, generator=gen)}


def launch(kernel, x, y, dz, dx):
    N0, N1 = x.shape[0], y.shape[0]
    B0, B1 = (64, 64) if x.is_cuda else (32, 16)
    kernel[(triton.cdiv(N0, B0),)](x, y, dz, dx, N0, N1, B0=B0, B1=B1)


PUZZLE = Puzzle(
    number=6, name="mul_relu_backward", title="Backward of the fused relu(outer product)",
    chapter="ch7 the P @ V reduction", kernel="mul_relu_backward_kernel", statement=STATEMENT, spec=spec,
    make_inputs=make_inputs, launch=launch, shapes={"check": dict(N0=100, N1=70),
                                                    "bench": dict(N0=8192, N1=8192)},
    summary="dx[i] = sum_j dz[j, i] * y[j] * (x[i] * y[j] > 0); dz: (N1, N0); grid (cdiv(N0, B0),).",
    lines=14, hints=("The derivative of relu(v) is 1 where v > 0 and 0 elsewhere (torch's convention at 0).",
                     "Masked-out lanes must contribute 0 to the sum: load with other=0.0."),
)
