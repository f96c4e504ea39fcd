"""Puzzle 15: write new keys and values into the paged KV cache through slot_mapping."""

import torch

from puzzles.puzzle import Puzzle

STATEMENT = """
    for each token t with slot = slot_mapping[t] >= 0:
        k_cache[slot // block_size, slot % block_size] = key[t];  v_cache[...] = value[t]
    key, value: (T, KVH, D) float16          slot_mapping: (T,) int32, -1 = do not store (padding)
    k_cache, v_cache: (num_blocks, block_size, KVH, D) float16, updated in place

One program per token. A slot is block_id * block_size + offset, so the cache seen as
(num_blocks * block_size, KVH, D) is simply indexed by the slot: copy the token's KVH * D values
there. Every other slot must keep its old contents (the checker compares the whole cache).

Engine: chapter 2's store_kvcache: after the k/v projections each new token's keys and values go to
the slot its sequence's block table reserved for it, wherever in the pool that block is.
"""


def spec(key, value, k_cache, v_cache, slot_mapping):
    k_flat, v_flat = k_cache.flatten(0, 1), v_cache.flatten(0, 1)  # (num_blocks * block_size, KVH, D)
    keep = slot_mapping >= 0
    k_flat[slot_mapping[keep].long()] = key[keep]
    v_flat[slot_mapping[keep].long()] = value[keep]
    return {"k_cache": k_cache, "v_cache": v_cache}  # the spec got clones; the kernel updates in place


def make_inputs(gen, T, KVH, D, num_blocks, block_size):
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:T].to(torch.int32)  # (T,) distinct
    slots[torch.randperm(T, generator=gen)[: T // 8]] = -1  # a few padding tokens
    return {"key": torch.randn(T, KVH, D, generator=gen).half(), "value": torch.randn(T, KVH, D, generator=gen).half(),
            "k_cache": torch.randn(num_blocks, block_size, KVH, D, generator=gen).half(),
            "v_cache": torch.randn(num_blocks, block_size, KVH, D, generator=gen).half(), "slot_mapping": slots}


def launch(kernel, key, value, k_cache, v_cache, slot_mapping):
    T, KVH, D = key.shape
    kernel[(T,)](key, value, k_cache, v_cache, slot_mapping, KVH=KVH, D=D)


def cost(key, value, k_cache, v_cache, slot_mapping):
    return {"bytes": 2 * (key.nbytes + value.nbytes) + slot_mapping.nbytes}  # read new k/v, write them once


PUZZLE = Puzzle(
    number=15, name="store_kvcache", title="Write K/V through a slot mapping", chapter="ch2 PagedAttention",
    kernel="store_kvcache_kernel", statement=STATEMENT, spec=spec, make_inputs=make_inputs, launch=launch,
    summary="k_cache.view(-1, KVH, D)[slot_mapping[t]] = key[t] (same for v), skipping slot -1; grid (T,).",
    shapes={"check": dict(T=20, KVH=2, D=32, num_blocks=8, block_size=16),
            "bench": dict(T=8192, KVH=8, D=128, num_blocks=1024, block_size=16)}, lines=8,
    hints=("tl.load(slot_mapping_ptr + t) returns a scalar; `if slot < 0: return` skips padding tokens.",
           "A (KVH, D) tile: offsets tl.arange(0, KVH)[:, None] * D + tl.arange(0, D)[None, :]."),
    cost=cost,
)
