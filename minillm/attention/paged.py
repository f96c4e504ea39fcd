"""Chapter 2: the torch reference for PagedAttention (vLLM, SOSP 2023).

Each layer writes this step's K/V into the block pool through slot_mapping, gathers every sequence's
blocks through its block table (logical order), and attends with padded SDPA. A mixed batch (chapter 4)
attends its decodes apart from its prefill chunks: padding a decode row to a chunk's length would cost
it the chunk's work. Chapter 7 replaces the gather-and-pad with Triton kernels that read blocks in place.

Checked by: pytest -m ch4 -k paged_attention (mixed batches against torch_ref), pytest -m ch2.
"""

from __future__ import annotations

from minillm.attention.sdpa import PaddedSDPA
from minillm.kv.paged import PagedKVCache


class PagedAttention(PaddedSDPA):
    split_decodes = True

    def __init__(self, kv: PagedKVCache):
        self.kv = kv

    def _key_index(self, step, rows, q_index):
        bs = self.kv.block_size
        num_blocks = -(-int(step.context_lens_host[rows].max()) // bs)
        return step.block_tables_host[rows, :num_blocks], num_blocks * bs  # (b, nb), dummy-padded

    def _gather_kv(self, layer_idx, k, v, g):
        k_cache, v_cache = self.kv.k_cache[layer_idx], self.kv.v_cache[layer_idx]  # (N, bs, nkv, d)
        k_seq = k_cache[g.kv_index].flatten(1, 2)  # (b, nb*bs, nkv, d), logical order
        v_seq = v_cache[g.kv_index].flatten(1, 2)
        return k_seq, v_seq
