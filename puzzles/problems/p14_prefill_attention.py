"""Puzzle 14: causal, block-tiled FlashAttention over a packed (varlen) batch with GQA."""

import torch
import triton

from puzzles.puzzle import Puzzle

STATEMENT = """
    for each sequence b, its tokens t in cu_seqlens[b] .. cu_seqlens[b+1]-1, each query head h:
        o[t, h] = softmax_j(q[t, h] . k[j, h // (H / KVH)] * scale) @ v[j, ...],  j from the sequence's
                  first token up to t (causal)
    q: (T, H, D) float16    k, v: (T, KVH, D) float16    o: (T, H, D) float16
    cu_seqlens: (B+1,) int32, cumulative sequence lengths starting at 0     scale = 1/sqrt(D)

Grid (cdiv(max_seqlen, BM), H, B): program (m, h, b) owns query rows m*BM.. of sequence b, head h;
programs whose rows start past the sequence's end return at once. The loop over key blocks stops at
the diagonal (block-causal: later blocks are all masked), and within the diagonal block the mask is
key position <= query position. Query head h reads kv head h // (H // KVH) (grouped-query attention).

Engine: chapter 7's prefill kernel; the engine packs all prefills of a step into one flat batch
described by cu_seqlens_q (chapter 2's flat batches, chapter 4's chunked prefill).
"""


def spec(q, k, v, cu_seqlens, max_seqlen):
    H, KVH, D = q.shape[1], k.shape[1], q.shape[2]
    o = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs = q[start:end].float().transpose(0, 1)  # (H, L, D)
        ks = k[start:end].float().transpose(0, 1).repeat_interleave(H // KVH, dim=0)  # (H, L, D)
        vs = v[start:end].float().transpose(0, 1).repeat_interleave(H // KVH, dim=0)
        out = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=D**-0.5)
        o[start:end] = out.transpose(0, 1).half()
    return {"o": o}


def make_inputs(gen, seqlens, H, KVH, D):
    T = sum(seqlens)
    cu_seqlens = torch.tensor([0, *torch.tensor(seqlens).cumsum(0).tolist()], dtype=torch.int32)  # (B+1,)
    return {"q": torch.randn(T, H, D, generator=gen).half(), "k": torch.randn(T, KVH, D, generator=gen).half(),
            "v": torch.randn(T, KVH, D, generator=gen).half(), "cu_seqlens": cu_seqlens,
            "max_seqlen": max(seqlens)}


def launch(kernel, q, k, v, cu_seqlens, max_seqlen, o):
    (_, H, D), KVH, B = q.shape, k.shape[1], cu_seqlens.shape[0] - 1
    BM, BN, warps = (128, 64, 8) if q.is_cuda else (32, 32, 4)
    grid = (triton.cdiv(max_seqlen, BM), H, B)
    kernel[grid](q, k, v, o, cu_seqlens, D**-0.5, H=H, KVH=KVH, D=D, BM=BM, BN=BN, num_warps=warps)


def cost(q, k, v, cu_seqlens, max_seqlen, o):
    lens = cu_seqlens.diff().tolist()
    return {"flops": sum(2 * n * n for n in lens) * q.shape[1] * q.shape[2]}  # half of 4 L^2 D per head


PUZZLE = Puzzle(
    number=14, name="prefill_attention", title="Causal varlen FlashAttention with GQA",
    chapter="ch7 Triton prefill", kernel="prefill_attention_kernel", statement=STATEMENT, spec=spec,
    summary="Causal varlen GQA attention; q, o: (T, H, D), k, v: (T, KVH, D); grid (cdiv(max_seqlen, BM), H, B).",
    make_inputs=make_inputs, launch=launch, lines=32,
    shapes={"check": dict(seqlens=(37, 150, 5), H=4, KVH=2, D=32),
            "bench": dict(seqlens=(2048,) * 8, H=32, KVH=8, D=128)},
    hints=("Token t, head h of q lives at (t * H + h) * D; of k at (t * KVH + kvh) * D.",
           "A scalar early exit works: `if m * BM >= seqlen: return`.",
           "Loop `for start in range(0, end, BN)` with end = min(seqlen, (m + 1) * BM) stops at the diagonal."),
    cost=cost,
)
