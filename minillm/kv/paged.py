"""Chapter 2: PagedAttention's KV cache (vLLM, SOSP 2023).

The KV pool is cut into fixed-size blocks: per layer, k_cache and v_cache of shape
(num_blocks, block_size, num_kv_heads, head_dim). A sequence owns a block table, the list of its
physical blocks in logical order; token position p lives in slot block_table[p // block_size] *
block_size + p % block_size. A block is allocated only when the previous one is full, so a sequence
wastes at most block_size - 1 slots, where a contiguous cache reserves max_model_len for everyone.

BlockAllocator: a free list and reference counts (counts above one arrive with prefix sharing, ch3).
BlockManager:  per-sequence block tables; can_allocate / allocate for prefills, can_append / may_append
               for the next token (nano-vllm's names), free for finished or preempted sequences.
PrefixHit:     what a prefix cache (chapter 3) holds of a sequence. An admission matches once
               (match) and hands the hit to can_allocate and allocate, as vLLM V1 hands the blocks of
               get_computed_blocks to allocate_slots; num_cached_tokens only peeks. Without a cache
               the hit is empty.

Checked by: pytest -m ch2 (hypothesis against a brute-force model of the pool).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

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

    def incref(self, block: int) -> None:
        """One more holder of a block someone already holds (a prefix cache sharing it, ch3)."""
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"incref of free block {block}")
        self.ref_counts[block] += 1

    def free(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"double free of block {block}")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_blocks.append(block)


@dataclass(frozen=True)
class PrefixHit:
    """The cached prefix an admission starts from: valid until the cache next changes, so match, then
    can_allocate and allocate with the same hit, with nothing in between."""

    blocks: list[int]  # cached KV blocks of the prompt's first full blocks, in order
    num_cached_tokens: int  # len(blocks) * block_size


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.01):
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        # vLLM V0's watermark: admit a prefill only if it leaves this many blocks free, so running
        # sequences can grow for a while before someone must be preempted.
        self.watermark_blocks = int(watermark * num_blocks)
        self.num_queried_tokens = 0  # prompt tokens looked up at first admissions
        self.num_hit_tokens = 0  # of those, tokens found cached (always 0 here; chapter 3's caches)

    @property
    def num_blocks(self) -> int:
        return self.allocator.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.allocator.num_free

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)  # ceil

    def max_hit_blocks(self, seq: Sequence) -> int:
        """Full blocks a prefix cache may serve: the last token is always computed (its logits pick the
        next token), so a prompt of exactly k blocks hits at most k - 1; a request asking for prompt
        logprobs (chapter 9) computes the positions they need (Sequence.max_cached_tokens)."""
        return min(seq.num_tokens - 1, seq.max_cached_tokens) // self.block_size

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix (vLLM's reset_prefix_cache); False, and nothing dropped, while a
        sequence holds blocks. Without a cache there is nothing to forget."""
        return self.allocator.num_free == self.num_blocks

    # Prefix caching (chapter 3) overrides match and num_cached_tokens; without a cache nothing is shared.
    def match(self, seq: Sequence) -> PrefixHit:
        """The one lookup of an admission attempt: pass its hit on to can_allocate and allocate."""
        return PrefixHit([], 0)

    def num_cached_tokens(self, seq: Sequence) -> int:
        """Prompt tokens whose K/V an admission would find cached: a peek that changes nothing."""
        return 0

    # num_tokens below: how many of the sequence's tokens must have a slot after this step; by default
    # all of them (a whole prefill, or a decode). The unified scheduler (ch4) passes less for a prefill
    # chunk, and num_lookahead_slots reserves room for tokens beyond them (speculative decoding). hit:
    # the admission's match(seq), or None to match here.
    def can_allocate(
        self, seq: Sequence, num_tokens: int | None = None, hit: PrefixHit | None = None
    ) -> bool:
        """Room to admit the sequence: its prompt (plus outputs after a preemption), or a first chunk?"""
        need = self.blocks_for(num_tokens or seq.num_tokens) - len(seq.block_table)
        return need <= self.num_free_blocks - self.watermark_blocks

    def allocate(self, seq: Sequence, num_tokens: int | None = None, hit: PrefixHit | None = None) -> None:
        if not seq.block_table:
            self._start_from(seq, hit if hit is not None else self.match(seq))
        self._grow(seq, num_tokens or seq.num_tokens)

    def _start_from(self, seq: Sequence, hit: PrefixHit) -> None:
        """Admission (first, or after a preemption): the block table begins with the hit's blocks (the
        caller has taken its references on them), and their tokens count as computed."""
        seq.block_table = list(hit.blocks)
        seq.num_computed_tokens = hit.num_cached_tokens
        if seq.num_preemptions == 0 and not seq.output_token_ids:  # first: not a recompute, not a jump
            seq.num_cached_tokens = hit.num_cached_tokens
            self.num_queried_tokens += seq.num_prompt_tokens
            self.num_hit_tokens += hit.num_cached_tokens

    def _grow(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) < self.blocks_for(num_tokens):
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

    def on_computed(self, seq: Sequence) -> None:
        """Called after each step with the sequence's new num_computed_tokens (a hook for chapter 3)."""


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
        # One block more than the manager hands out: the dummy block. Padded rows of a step (a bucketed
        # batch, a CUDA graph's spare rows) write their K/V there and padded block-table entries point
        # there, so nothing padded ever lands in a real block.
        self.dummy_block = num_blocks
        shape = (num_blocks + 1, block_size, num_kv_heads, head_dim)
        # zeros: slots past a context length are masked, but 0 * NaN from stale memory would still be NaN
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @property
    def num_blocks(self) -> int:
        return self.manager.num_blocks

    def usage(self, seqs) -> tuple[int, int, int]:
        """(slots holding K/V, slots in allocated blocks, slots in the pool). A block shared by several
        sequences (prefix caching) counts once, at its fullest. Whole arrays, not a loop per block: the
        engine records this every step, over every block of every running sequence."""
        seqs = list(seqs)
        bs, B = self.block_size, len(seqs)
        n_blocks = np.fromiter((len(s.block_table) for s in seqs), np.int64, B)  # (B,)
        total = int(n_blocks.sum())
        blocks = np.fromiter(itertools.chain.from_iterable(s.block_table for s in seqs), np.int64, total)
        computed = np.fromiter((s.num_computed_tokens for s in seqs), np.int64, B)  # (B,)
        index = np.arange(total) - np.repeat(np.cumsum(n_blocks) - n_blocks, n_blocks)  # position in its table
        fill = np.clip(np.repeat(computed, n_blocks) - index * bs, 0, bs)  # (total,) tokens in each block
        fullest = np.zeros(self.num_blocks + 1, np.int64)
        np.maximum.at(fullest, blocks, fill)
        used = int(fullest.sum())
        allocated = (self.num_blocks - self.manager.num_free_blocks) * self.block_size
        return used, allocated, self.num_blocks * self.block_size
