"""Puzzle 7: softmax over long rows, in three passes."""

import torch

from puzzles.puzzle import Puzzle

STATEMENT = """
    z[i, :] = exp(x[i, :] - m_i) / sum_j exp(x[i, j] - m_i),   m_i = max_j x[i, j]
    x: (N0, T) float32    z: (N0, T) float32     one program per row; T is longer than a block B1

Three passes over the row, each a loop like puzzle 5: (1) the running max m, (2) the sum of
exp(x - m), (3) write exp(x - m) / sum. Subtracting m keeps exp from overflowing: these rows carry
offsets near 100, and exp(100) is inf in float32.

Engine: the sampler turns a (batch, vocab) row of logits into probabilities exactly like this
(chapter 1), and attention does it for every query row (chapter 7).
"""


def spec(x):
    return {"z": torch.softmax(x, dim=-1)}  # (N0, T)


def make_inputs(gen, N0, T):
    offset = 100 * torch.rand(N0, 1, generator=gen)  # logits far from 0: exp(x) alone overflows
    return {"x": 4 * torch.randn(N0, T, generator=gen) + offset}


def launch(kernel, x, z):
    N0, T = x.shape
    B1 = 1024 if x.is_cuda else 128
    kernel[(N0,)](x, z, N0, T, B1=B1)


def diagnose(got, expected, inputs):
    """Name the two classic softmax mistakes: no normalisation, no max subtraction."""
    got64 = got.double()
    if not torch.isfinite(got64).all():
        return ["inf or NaN in the output: subtract the row max before exp (exp(100) overflows float32)."]
    sums = got64.sum(dim=-1)
    off = (sums - 1).abs() > 1e-3  # the rows that do not sum to 1
    if not off.any():
        return []
    first = int(off.nonzero()[0])
    ratio = got64[off] / expected.double()[off].clamp_min(1e-30)
    if (ratio.std(dim=-1) / ratio.mean(dim=-1)).max() < 1e-2 and sums[off].min() > 1:
        return [f"each row is proportional to the softmax but sums to {sums[first]:.4g} (row {first}), not 1: "
                "divide by the sum of the exponentials."]
    if sums[off].max() < 1:
        return [f"row {first} sums to {sums[first]:.4g}, less than 1: the denominator is too large. A running "
                "sum must be rescaled by exp(m - m_new) whenever the running max grows."]
    return [f"rows of a softmax sum to 1; row {first} of yours sums to {sums[first]:.4g}."]


PUZZLE = Puzzle(
    number=7, name="softmax", title="Softmax in three passes", chapter="ch1 sampling, ch7 attention",
    kernel="softmax_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="Row softmax of x: (N0, T), one program per row, three passes of blocks of B1.",
    shapes={"check": dict(N0=16, T=2000), "bench": dict(N0=256, T=32000)}, lines=20,
    hints=("Start the max at float('-inf') and load with other=float('-inf') so padding never wins.",
           "tl.max(v, axis=0) and tl.sum(v, axis=0) reduce a block to a scalar."),
    diagnose=diagnose,
)
