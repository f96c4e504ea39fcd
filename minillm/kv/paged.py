"""Chapter 2: PagedAttention's KV cache (vLLM, SOSP 2023).

The KV pool is cut into fixed-size blocks: per layer, k_cache and v_cache of shape
(num_blocks, block_size, num_kv_heads, head_dim). A sequence owns a block table, the list of its
physical blocks in logical order; token position p lives in slot block_table[p // block_size] *
block_size + p % block_size. A block is allocated only when the previous one is full, so a sequence
wastes at most block_size - 1 slots, where a contiguous cache reserves max_model_len for everyone.

BlockAllocator: a free list and reference counts (counts above one arrive with prefix sharing, ch3).
BlockManager:  per-sequence block tables; can_allocate / allocate for prefills, can_append / may_append
               for the next token (nano-vllm's names), free for finished or preempted sequences.

Checked by: pytest -m ch2 (hypothesis against a brute-force model of the pool).
"""

from __future__ import annotations

from collections import deque

import torch

from minillm.attention.metadata import AttentionMetadata
from minillm.attention.sdpa import PaddedSDPA
from minillm.request import Sequence


class BlockAllocator:
    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.ref_counts = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def allocate(self) -> int:
        if not self.free_blocks:
            raise RuntimeError("out of KV blocks")
        block = self.free_blocks.popleft()
        self.ref_counts[block] = 1
        return block

    def free(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"double free of block {block}")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_blocks.append(block)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.01):
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        # vLLM V0's watermark: admit a prefill only if it leaves this many blocks free, so running
        # sequences can grow for a while before someone must be preempted.
        self.watermark_blocks = int(watermark * num_blocks)

    @property
    def num_blocks(self) -> int:
        return self.allocator.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.allocator.num_free

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)  # ceil

    # num_tokens below: how many of the sequence's tokens must have a slot after this step; by default
    # all of them (a whole prefill, or a decode). The unified scheduler (ch4) passes less for a prefill
    # chunk, and num_lookahead_slots reserves room for tokens beyond them (speculative decoding).
    def can_allocate(self, seq: Sequence, num_tokens: int | None = None) -> bool:
        """Room to admit the sequence: its prompt (plus outputs after a preemption), or a first chunk?"""
        need = self.blocks_for(num_tokens or seq.num_tokens) - len(seq.block_table)
        return need <= self.num_free_blocks - self.watermark_blocks

    def allocate(self, seq: Sequence, num_tokens: int | None = None) -> None:
        while len(seq.block_table) < self.blocks_for(num_tokens or seq.num_tokens):
            seq.block_table.append(self.allocator.allocate())

    def can_append(self, seq: Sequence, num_tokens: int | None = None, num_lookahead_slots: int = 0) -> bool:
        """Room for the tokens a running sequence writes this step (a decode: position num_tokens - 1)?"""
        need = self.blocks_for((num_tokens or seq.num_tokens) + num_lookahead_slots) - len(seq.block_table)
        return need <= self.num_free_blocks

    def may_append(self, seq: Sequence, num_tokens: int | None = None, num_lookahead_slots: int = 0) -> None:
        """Give the sequence the blocks those tokens (and the lookahead slots) start."""
        self.allocate(seq, (num_tokens or seq.num_tokens) + num_lookahead_slots)

    def free(self, seq: Sequence) -> None:
        for block in reversed(seq.block_table):
            self.allocator.free(block)
        seq.block_table = []

    # Hooks for prefix caching (chapter 3); without a cache nothing is shared.
    def num_cached_tokens(self, seq: Sequence) -> int:
        """Prompt tokens whose K/V an allocation would find already cached."""
        return 0

    def on_computed(self, seq: Sequence) -> None:
        """Called after each step with the sequence's new num_computed_tokens."""


class PagedKVCache:
    """The block pool tensors plus the BlockManager that hands out their blocks."""

    def __init__(
        self,
        num_layers,
        num_blocks,
        block_size,
        num_kv_heads,
        head_dim,
        dtype,
        device,
        manager_cls=BlockManager,
    ):
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        if num_blocks < 1:
            raise ValueError(f"kv_cache_tokens holds no block of block_size={block_size} tokens")
        self.block_size = block_size
        self.manager = manager_cls(num_blocks, block_size)
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        # zeros: slots past a context length are masked, but 0 * NaN from stale memory would still be NaN
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def num_blocks(self) -> int:
        return self.manager.num_blocks

    def usage(self, seqs) -> tuple[int, int, int]:
        """(slots holding K/V, slots in allocated blocks, slots in the pool). A block shared by several
        sequences (prefix caching) counts once."""
        filled: dict[int, int] = {}
        bs = self.block_size
        for s in seqs:
            for i, block in enumerate(s.block_table):
                n = min(bs, max(0, s.num_computed_tokens - i * bs))
                filled[block] = max(filled.get(block, 0), n)
        used = sum(filled.values())
        allocated = (self.num_blocks - self.manager.num_free_blocks) * self.block_size
        return used, allocated, self.num_blocks * self.block_size


class PagedAttention(PaddedSDPA):
    """The torch reference for paged attention: write new K/V through slot_mapping, gather each
    sequence's blocks through its block table, and attend with padded SDPA. Chapter 7 replaces the
    gather-and-pad with Triton kernels that read blocks in place."""

    def __init__(self, kv: PagedKVCache):
        self.kv = kv

    def forward(self, layer_idx: int, q, k, v, meta: AttentionMetadata) -> torch.Tensor:
        k_cache, v_cache = self.kv.k_cache[layer_idx], self.kv.v_cache[layer_idx]  # (N, bs, nkv, d)
        N, bs, nkv, d = k_cache.shape
        k_cache.view(-1, nkv, d)[meta.slot_mapping] = k  # (N*bs, nkv, d) indexed by slot
        v_cache.view(-1, nkv, d)[meta.slot_mapping] = v
        groups = meta.split_decodes()  # mixed batches (chapter 4): decodes apart from prefill chunks
        out = q if len(groups) == 1 else torch.empty_like(q)
        for sub, tokens in groups:
            num_blocks = -(-sub.max_context_len // bs)
            tables = sub.block_tables[:, :num_blocks]  # (b, nb)
            b = tables.shape[0]
            k_seq = k_cache[tables].view(b, num_blocks * bs, nkv, d)  # (b, nb*bs, nkv, d), logical order
            v_seq = v_cache[tables].view(b, num_blocks * bs, nkv, d)
            if tokens is None:
                return self.attend(q, k_seq, v_seq, sub)
            out[tokens] = self.attend(q[tokens], k_seq, v_seq, sub)
        return out
