"""Chapter 1: attention over the contiguous KV cache (one row of max_model_len slots per sequence).

New K/V are written through slot_mapping (slot = row * max_model_len + position), then each sequence
attends over the first context_len slots of its row, gathered into a padded batch.

Checked by: pytest -m ch1 -k attention (against torch_ref).
"""

from __future__ import annotations

import numpy as np

from minillm.attention.sdpa import PaddedSDPA
from minillm.kv.contiguous import ContiguousKVCache


class ContiguousAttention(PaddedSDPA):
    def __init__(self, kv: ContiguousKVCache):
        self.kv = kv

    def _key_index(self, step, rows, q_index):
        num_keys = int(step.context_lens_host[rows].max())
        row = step.block_tables_host[rows, :1]  # (b, 1): the sequence's row
        return row * self.kv.max_model_len + np.arange(num_keys)[None, :], num_keys  # (b, Lk) slots

    def _gather_kv(self, layer_idx, k, v, g):
        nkv, d = k.shape[1:]
        k_flat = self.kv.k_cache[layer_idx].view(-1, nkv, d)
        v_flat = self.kv.v_cache[layer_idx].view(-1, nkv, d)
        return k_flat[g.kv_index], v_flat[g.kv_index]  # (b, Lk, nkv, d)
