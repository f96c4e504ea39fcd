"""The decode GEMV (minillm/model/gemv.py) against float64 matmul, in Triton's interpreter on a CPU."""

from __future__ import annotations

import pytest
import torch
import triton

import minillm  # noqa: F401  (sets TRITON_INTERPRET on a machine without CUDA)
from minillm.model.gemv import MAX_M, TILE_ELEMENTS, gemv, gemv_config

pytestmark = pytest.mark.ch7
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    "m, n, k, dtype, tile",
    [
        (1, 64, 128, torch.float32, None),  # the default tile
        (1, 37, 100, torch.float32, (4, 32)),  # ragged N and K: masked rows and a masked last K step
        (3, 50, 70, torch.float32, (8, 16)),  # three rows, the tile's fourth row masked
        (8, 33, 257, torch.bfloat16, (2, 64)),
        (2, 16, 48, torch.bfloat16, (16, 16)),  # one program holds all of N
    ],
)
def test_gemv_matches_float64(m, n, k, dtype, tile):
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    x = torch.randn(m, k, generator=g).to(dtype).to(DEVICE)
    w = (torch.randn(n, k, generator=g) * 0.1).to(dtype).to(DEVICE)
    block_n, block_k = tile or (None, None)
    y = gemv(x, w, block_n=block_n, block_k=block_k)
    want = x.double() @ w.double().T  # the inputs as rounded, products and sums in float64
    assert y.shape == (m, n) and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2 * want.abs().max().item()
    assert (y.double() - want).abs().max().item() <= tol


def test_gemv_reads_strided_rows_and_fills_out():
    x_full = torch.randn(4, 96, device=DEVICE)
    x = x_full[::2, :80]  # rows 0 and 2, row stride 192: unit stride along K only
    w = torch.randn(24, 80, device=DEVICE)
    out = torch.full((2, 24), float("nan"), device=DEVICE)
    assert gemv(x, w, out=out) is out
    torch.testing.assert_close(out, x @ w.T, rtol=1e-5, atol=1e-5)


def test_gemv_config_fills_the_gpu_and_bounds_the_tile():
    assert gemv_config(1, 1024, 2048) == (2, 2048)  # o_proj: 512 programs, each row strip in one step
    assert gemv_config(1, 151936, 1024) == (16, 512)  # lm_head: the widest tile, still 9,496 programs
    for m in range(1, MAX_M + 1):
        block_n, block_k = gemv_config(m, 6144, 1024)
        assert 6144 // block_n >= 264 and block_k & (block_k - 1) == 0 and block_k >= 16
        assert triton.next_power_of_2(m) * block_n * block_k <= TILE_ELEMENTS


@pytest.mark.parametrize(
    "x, w, match",
    [
        (torch.zeros(MAX_M + 1, 8), torch.zeros(4, 8), "rows"),
        (torch.zeros(1, 8), torch.zeros(4, 9), "equal K"),
        (torch.zeros(1, 8), torch.zeros(4, 8, dtype=torch.float64), "one dtype"),
        (torch.zeros(1, 8), torch.zeros(8, 4).T, "contiguous"),
    ],
)
def test_gemv_refuses_what_it_cannot_take(x, w, match):
    with pytest.raises(ValueError, match=match):
        gemv(x, w)
    with pytest.raises(ValueError, match="out must be"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), out=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="powers of two"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), block_n=3)
