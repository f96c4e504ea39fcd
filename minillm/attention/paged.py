"""Chapter 2: the torch reference for PagedAttention (vLLM, SOSP 2023).

Each layer writes this step's K/V into the block pool through slot_mapping, gathers every sequence's
blocks through its block table (logical order), and attends with padded SDPA. A mixed batch (chapter 4)
attends its decodes apart from its prefill chunks: padding a decode row to a chunk's length would cost
it the chunk's work. Chapter 7 replaces the gather-and-pad with Triton kernels that read blocks in place.

Under torch.compile (chapter 6 compiles decode steps) a decode step's write, gather and SDPA run as one
opaque operator, `minillm::paged_decode_attention`, as vLLM registers its attention: Inductor then fuses
the work around attention and leaves attention to the kernels eager PyTorch picks for it, instead of
lowering the gather and the masked grouped-query SDPA itself.

Checked by: pytest -m ch4 -k paged_attention (mixed batches against torch_ref), pytest -m ch2.
"""

from __future__ import annotations

import torch

from minillm.attention.metadata import PaddedGroup
from minillm.attention.ops import write_kv
from minillm.attention.sdpa import PaddedSDPA
from minillm.kv.paged import PagedKVCache


def gather_blocks(k_cache, v_cache, block_tables) -> tuple[torch.Tensor, torch.Tensor]:
    """Caches (N, bs, nkv, d), block_tables (b, nb) -> each row's keys and values (b, nb*bs, nkv, d),
    in logical order."""
    return k_cache[block_tables].flatten(1, 2), v_cache[block_tables].flatten(1, 2)


class PagedAttention(PaddedSDPA):
    split_decodes = True

    def __init__(self, kv: PagedKVCache):
        self.kv = kv

    def _key_index(self, step, rows, q_index):
        bs = self.kv.block_size
        num_blocks = -(-int(step.context_lens_host[rows].max()) // bs)
        return step.block_tables_host[rows, :num_blocks], num_blocks * bs  # (b, nb), dummy-padded

    def _gather_kv(self, layer_idx, k, v, g):
        return gather_blocks(self.kv.k_cache[layer_idx], self.kv.v_cache[layer_idx], g.kv_index)

    def forward(self, layer_idx: int, q, k, v, meta):
        g = meta.groups[0]
        if torch.compiler.is_compiling() and len(meta.groups) == 1 and g.q_index is None and g.tokens is None:
            k_cache, v_cache = self.kv.k_cache[layer_idx], self.kv.v_cache[layer_idx]
            return paged_decode_attention(q, k, v, k_cache, v_cache, meta.slot_mapping, g.kv_index, g.mask)
        return super().forward(layer_idx, q, k, v, meta)


@torch.library.custom_op("minillm::paged_decode_attention", mutates_args=("k_cache", "v_cache"))
def paged_decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """A decode step of one layer, the eager code as one operator. q: (B, nh, d); k, v: (B, nkv, d);
    caches (blocks, block_size, nkv, d); block_tables (B, nb); mask (B, 1, nb*block_size). Returns
    (B, nh, d)."""
    write_kv(k, v, k_cache, v_cache, slot_mapping)
    group = PaddedGroup(q_index=None, kv_index=block_tables, mask=mask, out_index=None, tokens=None)
    return PaddedSDPA.attend(q, *gather_blocks(k_cache, v_cache, block_tables), group)


@paged_decode_attention.register_fake
def _(q, k, v, k_cache, v_cache, slot_mapping, block_tables, mask):
    return q.new_empty(q.shape)
