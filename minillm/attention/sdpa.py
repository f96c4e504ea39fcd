"""Chapter 1: attention through torch's scaled_dot_product_attention on padded batches.

Ragged sequences are scattered into a padded (B, L) layout, attended with a mask that is causal in
absolute positions and stops at each sequence's context length, then gathered back to the flat layout.
The padding is the cost chapter 2 removes. NoCacheAttention is the no-KV-cache baseline: each step
recomputes K and V of the whole sequence, so attention only ever sees this step's tokens.

Checked by: pytest -m ch1 -k attention (against torch_ref).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from minillm.attention.metadata import AttentionMetadata


def pad_queries(x: torch.Tensor, meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, h, d) flat -> (B, max_seqlen_q, h, d) padded, and each token's offset within its sequence."""
    offsets = torch.arange(x.shape[0], device=x.device) - meta.cu_seqlens_q[meta.seq_ids]  # (T,)
    padded = x.new_zeros(meta.num_seqs, meta.max_seqlen_q, *x.shape[1:])
    padded[meta.seq_ids, offsets] = x
    return padded, offsets


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
) -> torch.Tensor:
    """q: (T, nh, d) flat new queries; k, v: (B, Lk, nkv, d) each sequence's KV from position 0.

    Returns (T, nh, d). Key j is visible to the query at absolute position p iff j <= p and
    j < context_len. Padded query rows get position 0 so that no softmax row is empty.
    """
    q_pad, offsets = pad_queries(q, meta)  # (B, Lq, nh, d)
    B, Lq = q_pad.shape[:2]
    Lk = k.shape[1]
    valid_q = (
        torch.arange(Lq, device=q.device)[None, :] < (meta.cu_seqlens_q[1:] - meta.cu_seqlens_q[:-1])[:, None]
    )
    q_pos = (meta.query_start[:, None] + torch.arange(Lq, device=q.device)[None, :]) * valid_q  # (B, Lq)
    k_pos = torch.arange(Lk, device=q.device)  # (Lk,)
    mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (
        k_pos[None, None, :] < meta.context_lens[:, None, None]
    )
    out = F.scaled_dot_product_attention(
        q_pad.transpose(1, 2),  # (B, nh, Lq, d)
        k.transpose(1, 2),  # (B, nkv, Lk, d)
        v.transpose(1, 2),
        attn_mask=mask[:, None],  # (B, 1, Lq, Lk)
        enable_gqa=True,
    ).transpose(1, 2)  # (B, Lq, nh, d)
    return out[meta.seq_ids, offsets]  # (T, nh, d)


class NoCacheAttention:
    """No KV cache: every step feeds each sequence's whole token list, so K/V come from this step."""

    def forward(self, layer_idx: int, q, k, v, meta: AttentionMetadata) -> torch.Tensor:
        k_pad, _ = pad_queries(k, meta)  # (B, L, nkv, d)
        v_pad, _ = pad_queries(v, meta)
        return padded_attention(q, k_pad, v_pad, meta)
