"""The reference attention: one sequence at a time, explicit softmax, any dtype (float64 in tests).

Slow and obviously correct; every backend and every kernel (chapter 7) is tested against it.
Run: pytest -m ch1 -k attention
"""

from __future__ import annotations

import math

import torch


def ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int) -> torch.Tensor:
    """Causal attention for one sequence.

    q: (Lq, nh, d) new queries at absolute positions q_start .. q_start+Lq-1
    k, v: (Lk, nkv, d) keys/values at positions 0 .. Lk-1 (Lk = q_start + Lq)
    returns (Lq, nh, d). Query head h reads KV head h // (nh // nkv) (grouped-query attention).
    """
    Lq, nh, d = q.shape
    Lk, nkv, _ = k.shape
    group = nh // nkv
    k = k.repeat_interleave(group, dim=1)  # (Lk, nh, d)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)  # (nh, Lq, Lk)
    q_pos = torch.arange(q_start, q_start + Lq, device=q.device)[:, None]
    k_pos = torch.arange(Lk, device=q.device)[None, :]
    scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v)  # (Lq, nh, d)


def ref_varlen_attention(q, k_seqs, v_seqs, cu_seqlens_q) -> torch.Tensor:
    """Flat queries of B sequences; k_seqs[b], v_seqs[b]: (context_len_b, nkv, d) full KV of sequence b."""
    outs = []
    for b in range(len(k_seqs)):
        s, e = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        outs.append(ref_attention(q[s:e], k_seqs[b], v_seqs[b], k_seqs[b].shape[0] - (e - s)))
    return torch.cat(outs)
