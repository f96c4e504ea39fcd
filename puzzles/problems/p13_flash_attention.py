"""Puzzle 13: FlashAttention for one head: scores never leave the chip."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    o = softmax(q @ k^T * scale) @ v,   scale = 1/sqrt(D)
    q: (Tq, D) float16    k, v: (Tk, D) float16    o: (Tq, D) float16    no mask (not causal)

Each program owns BM query rows and walks the keys in blocks of BN, keeping for every row the online
softmax state of puzzle 8 plus an output accumulator:
    s = q_tile @ k_tile^T * scale                 (BM, BN)   -inf where the key is past Tk
    m_new = max(m, rowmax(s));  p = exp(s - m_new);  alpha = exp(m - m_new)
    l = l * alpha + rowsum(p);  acc = acc * alpha + p @ v_tile;  m = m_new
and stores acc / l. The (Tq, Tk) score matrix is never written to memory.

Engine: the core of chapter 7's prefill kernel (the next puzzle adds heads, causality and batches).
"""


def spec(q, k, v):
    scale = q.shape[-1] ** -0.5
    p = torch.softmax((q.float() @ k.float().T) * scale, dim=-1)  # (Tq, Tk)
    return {"o": (p @ v.float()).half()}


def make_inputs(gen, Tq, Tk, D):
    return {"q": torch.randn(Tq, D, generator=gen).half(), "k": torch.randn(Tk, D, generator=gen).half(),
            "v": torch.randn(Tk, D, generator=gen).half()}


def launch(kernel, q, k, v, o):
    (Tq, D), Tk = q.shape, k.shape[0]
    BM, BN, warps = (128, 64, 8) if q.is_cuda else (32, 32, 4)
    kernel[(triton.cdiv(Tq, BM),)](q, k, v, o, Tq, Tk, D**-0.5, D=D, BM=BM, BN=BN, num_warps=warps)


def cost(q, k, v, o):
    return {"flops": 4 * q.shape[0] * k.shape[0] * q.shape[1]}  # two matmuls of Tq x Tk x D


PUZZLE = Puzzle(
    number=13, name="flash_attention", title="FlashAttention, one head", chapter="ch7 FlashAttention",
    kernel="flash_attention_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="o = softmax(q @ k^T * scale) @ v; q: (Tq, D), k, v: (Tk, D); grid (cdiv(Tq, BM),).",
    shapes={"check": dict(Tq=200, Tk=150, D=32), "bench": dict(Tq=8192, Tk=8192, D=128)}, lines=24,
    hints=("tl.trans(k_tile) turns (BN, D) into (D, BN) for the q @ k^T product.",
           "Feed p to the second tl.dot as float16 (p.to(tl.float16)), as FlashAttention does.",
           "Mask the scores of padded keys with tl.where(offs_n[None, :] < Tk, s, float('-inf'))."),
    cost=cost,
)
