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


def token_offsets(meta: AttentionMetadata) -> torch.Tensor:
    """(T,) each new token's index within its sequence's new tokens."""
    T = meta.seq_ids.shape[0]
    return torch.arange(T, device=meta.seq_ids.device) - meta.cu_seqlens_q[meta.seq_ids]


def pad_tokens(x: torch.Tensor, meta: AttentionMetadata, offsets: torch.Tensor) -> torch.Tensor:
    """(T, h, d) flat -> (B, max_seqlen_q, h, d) padded with zeros."""
    padded = x.new_zeros(meta.num_seqs, meta.max_seqlen_q, *x.shape[1:])
    padded[meta.seq_ids, offsets] = x
    return padded


def attention_mask(meta: AttentionMetadata, num_keys: int) -> torch.Tensor:
    """(B, 1, max_seqlen_q, num_keys) bool. Key j is visible to the query at absolute position p iff
    j <= p and j < context_len. Padded query rows get position 0, so no softmax row is empty."""
    dev = meta.context_lens.device
    Lq = meta.max_seqlen_q
    q_lens = meta.cu_seqlens_q[1:] - meta.cu_seqlens_q[:-1]
    valid_q = torch.arange(Lq, device=dev)[None, :] < q_lens[:, None]  # (B, Lq)
    q_pos = (meta.query_start[:, None] + torch.arange(Lq, device=dev)[None, :]) * valid_q  # (B, Lq)
    k_pos = torch.arange(num_keys, device=dev)[None, None, :]  # (1, 1, Lk)
    mask = (k_pos <= q_pos[:, :, None]) & (k_pos < meta.context_lens[:, None, None])  # (B, Lq, Lk)
    return mask[:, None]


class PaddedSDPA:
    """SDPA over padded (B, L) batches. The mask and token offsets depend only on the step's metadata,
    so they are built at the first layer of a step (kept in meta.scratch) and reused by the others."""

    def _layout(self, meta: AttentionMetadata, num_keys: int):
        key = ("layout", num_keys)
        if key not in meta.scratch:
            meta.scratch[key] = token_offsets(meta), attention_mask(meta, num_keys)
        return meta.scratch[key]

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """q: (T, nh, d) flat new queries; k, v: (B, Lk, nkv, d) each sequence's KV from position 0.
        Returns (T, nh, d)."""
        offsets, mask = self._layout(meta, k.shape[1])
        decode = meta.max_seqlen_q == 1  # one new token per sequence: the flat layout is already padded
        q_pad = q[:, None] if decode else pad_tokens(q, meta, offsets)  # (B, Lq, nh, d)
        out = F.scaled_dot_product_attention(
            q_pad.transpose(1, 2),  # (B, nh, Lq, d)
            k.transpose(1, 2),  # (B, nkv, Lk, d)
            v.transpose(1, 2),
            attn_mask=mask,  # (B, 1, Lq, Lk)
            enable_gqa=True,
        ).transpose(1, 2)  # (B, Lq, nh, d)
        return out[:, 0] if decode else out[meta.seq_ids, offsets]  # (T, nh, d)


class NoCacheAttention(PaddedSDPA):
    """No KV cache: every step feeds each sequence's whole token list, so K/V come from this step."""

    def forward(self, layer_idx: int, q, k, v, meta: AttentionMetadata) -> torch.Tensor:
        offsets, _ = self._layout(meta, meta.max_seqlen_q)
        k_pad = pad_tokens(k, meta, offsets)  # (B, L, nkv, d)
        v_pad = pad_tokens(v, meta, offsets)
        return self.attend(q, k_pad, v_pad, meta)
