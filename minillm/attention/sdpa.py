"""Chapter 1: attention through torch's scaled_dot_product_attention on padded batches.

Ragged sequences are gathered into a padded (b, Lq) layout, attended with a mask that is causal in
absolute positions and stops at each sequence's context length, then gathered back to the flat layout.
The padding is the cost chapter 7's kernels remove. prepare() builds the gather indices and the mask on
the host once per step (one upload); forward() only indexes, so every shape comes from a tensor.

NoCacheAttention is the no-KV-cache baseline: each step recomputes K and V of the whole sequence, so
attention only ever sees this step's tokens.

Checked by: pytest -m ch1 -k attention (against torch_ref).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from minillm.attention.metadata import AttentionMetadata, PaddedGroup, StepInputs
from minillm.attention.ops import store_kv


def upload(arrays: list[np.ndarray], device) -> list[torch.Tensor]:
    """Several small int64 host arrays to the device in one copy; returns views of the same shapes."""
    flat = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.int64, copy=False)
    dev = torch.from_numpy(flat).to(device, non_blocking=True)
    out, start = [], 0
    for a in arrays:
        out.append(dev[start : start + a.size].view(a.shape))
        start += a.size
    return out


class PaddedSDPA:
    """Shared by the torch backends: the padded layout of a step, and SDPA over it. A subclass says
    where each row's keys are (_key_index) and how it gathers them (_gather_kv)."""

    split_decodes = False  # paged (chapter 4's mixed batches) attends decodes apart from prefill chunks
    kv = None  # the cache a subclass reads: k_cache / v_cache, one (blocks, block_size, nkv, d) per layer

    def prepare(self, step: StepInputs) -> AttentionMetadata:
        q_lens = step.q_lens_host
        decodes, others = np.flatnonzero(q_lens == 1), np.flatnonzero(q_lens > 1)
        if self.split_decodes and len(decodes) and len(others):
            # Padding a decode row to a chunk's length would cost it the chunk's work.
            groups = (self._group(step, decodes, whole=False), self._group(step, others, whole=False))
        else:
            groups = (self._group(step, np.arange(len(q_lens)), whole=True),)
        return AttentionMetadata(step.slot_mapping, groups, step)

    def _key_index(self, step: StepInputs, rows: np.ndarray, q_index: np.ndarray) -> tuple[np.ndarray, int]:
        """(b, n) what _gather_kv indexes with for these rows, and the number of keys it yields."""
        raise NotImplementedError

    def _group(self, step: StepInputs, rows: np.ndarray, whole: bool) -> PaddedGroup:
        q_lens, ctx = step.q_lens_host[rows], step.context_lens_host[rows]  # (b,) each
        starts = (np.cumsum(step.q_lens_host) - step.q_lens_host)[rows]  # (b,) first token of each row in T
        Lq = int(q_lens.max())
        col = np.arange(Lq)[None, :]  # (1, Lq)
        valid = col < q_lens[:, None]  # (b, Lq)
        q_index = np.where(valid, starts[:, None] + col, starts[:, None])  # (b, Lq); padding: a real token
        # padded query rows sit at position 0, so no softmax row is empty
        q_pos = np.where(valid, (ctx - q_lens)[:, None] + col, 0)  # (b, Lq)
        kv_index, num_keys = self._key_index(step, rows, q_index)
        arrays = [q_index, kv_index, q_pos, ctx]
        if Lq > 1:
            arrays.append((np.arange(len(rows))[:, None] * Lq + col)[valid])  # (T_g,) out_index
        if not whole:
            arrays.append(q_index[valid])  # (T_g,) tokens
        q_index_t, kv_index_t, q_pos_t, ctx_t, *rest = upload(arrays, step.slot_mapping.device)
        out_index = rest.pop(0) if Lq > 1 else None
        tokens = rest.pop(0) if not whole else None
        k_pos = torch.arange(num_keys, device=q_pos_t.device)[None, None, :]  # (1, 1, Lk)
        mask = (k_pos <= q_pos_t[:, :, None]) & (k_pos < ctx_t[:, None, None])  # (b, Lq, Lk)
        if whole and Lq == 1:  # a batch of decodes: the flat layout is already (B, 1)
            q_index_t = None
        return PaddedGroup(q_index_t, kv_index_t, mask, out_index, tokens)

    def _gather_kv(self, layer_idx: int, k, v, g: PaddedGroup) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, Lk, nkv, d) keys and values of the group's rows, in position order."""
        raise NotImplementedError

    def _write_kv(self, layer_idx: int, k, v, meta: AttentionMetadata) -> None:
        """Store this step's K/V through slot_mapping before anyone attends (no cache: nothing)."""
        if self.kv is None:
            return
        store_kv(k, v, self.kv.k_cache[layer_idx], self.kv.v_cache[layer_idx], meta.slot_mapping)

    def forward(self, layer_idx: int, q, k, v, meta: AttentionMetadata) -> torch.Tensor:
        """q: (T, nh, d); k, v: (T, nkv, d) this step's. Returns (T, nh, d)."""
        self._write_kv(layer_idx, k, v, meta)
        out = q if len(meta.groups) == 1 else torch.empty_like(q)
        for g in meta.groups:
            k_g, v_g = self._gather_kv(layer_idx, k, v, g)  # (b, Lk, nkv, d)
            o = self.attend(q, k_g, v_g, g)  # (T_g, nh, d)
            if g.tokens is None:
                return o
            out.index_copy_(0, g.tokens, o)  # (T, nh, d): the group's rows back in place
        return out

    @staticmethod
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: PaddedGroup) -> torch.Tensor:
        """q: (T, nh, d) flat queries; k, v: (b, Lk, nkv, d) each row's keys from position 0.
        Returns the group's (T_g, nh, d)."""
        nh, d = q.shape[1:]
        q_pad = q[:, None] if g.q_index is None else q[g.q_index]  # (b, Lq, nh, d)
        # Sizes that are equal by construction, stated so: a compiled forward then knows the batch
        # dimensions of q, k and the mask agree instead of guarding on whether one of them is 1.
        torch._check(k.shape[0] == q_pad.shape[0])
        torch._check(g.mask.shape[0] == q_pad.shape[0])
        torch._check(g.mask.shape[2] == k.shape[1])
        o = F.scaled_dot_product_attention(
            # (b, nh, Lq, d) copied to a dense layout, which Inductor lowers SDPA for; clone, not
            # .contiguous(), whose "is it already?" would make a compiled forward guard on b == 1
            q_pad.transpose(1, 2).clone(memory_format=torch.contiguous_format),
            k.transpose(1, 2),  # (b, nkv, Lk, d)
            v.transpose(1, 2),
            attn_mask=g.mask[:, None],  # (b, 1, Lq, Lk): one mask for every head
            enable_gqa=True,
        ).transpose(1, 2)  # (b, Lq, nh, d)
        o = o.reshape(-1, nh, d)  # (b * Lq, nh, d)
        return o if g.out_index is None else o[g.out_index]  # (T_g, nh, d)


class NoCacheAttention(PaddedSDPA):
    """No KV cache: every step feeds each sequence's whole token list, so K/V come from this step."""

    def _key_index(self, step, rows, q_index):
        return q_index, q_index.shape[1]  # keys are the row's own tokens, positions 0 .. Lq-1

    def _gather_kv(self, layer_idx, k, v, g):
        return k[g.kv_index], v[g.kv_index]  # (b, Lq, nkv, d)
