"""store_kvcache: write this step's K/V into the paged cache through slot_mapping (puzzle 15).

One program per new token: it reads the token's (KVH, D) keys and values and writes them at slot
`slot_mapping[t]` (slot = block * block_size + offset) of the layer's cache, viewed as (slots, KVH, D).
A negative slot is a padding token and writes nothing; the engine's padded rows point at the dummy block
instead, so every row writes somewhere harmless and the kernel needs no branch on the host.

Checked by: pytest -m ch7 -k store (against index_copy_), python -m puzzles check 15 --solution.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def store_kvcache_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
                         KVH: tl.constexpr, D: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t)
    if slot < 0:  # a padding token: nothing to store
        return
    offs = tl.arange(0, KVH)[:, None] * D + tl.arange(0, D)[None, :]  # (KVH, D) one token's heads
    tl.store(k_cache_ptr + slot * (KVH * D) + offs, tl.load(key_ptr + t * (KVH * D) + offs))
    tl.store(v_cache_ptr + slot * (KVH * D) + offs, tl.load(value_ptr + t * (KVH * D) + offs))


def store_kvcache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  slot_mapping: torch.Tensor) -> None:
    """k, v: (T, KVH, D) this step's; k_cache, v_cache: (blocks, block_size, KVH, D); slot_mapping (T,)."""
    T, KVH, D = k.shape
    if T == 0:
        return
    store_kvcache_kernel[(T,)](k.contiguous(), v.contiguous(), k_cache, v_cache, slot_mapping, KVH=KVH, D=D)
