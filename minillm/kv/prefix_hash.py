"""Chapter 3: prefix caching with chained block hashes (vLLM's automatic prefix caching).

A full block's identity is a hash of (the previous block's hash, this block's token ids): equal hashes
mean equal prefixes up to the block's end, so a new request can reuse the K/V blocks of any earlier
request that shared its prefix, and skip their prefill. Only full blocks are cached.

The free queue doubles as the cache's LRU list. A freed block that holds cached K/V goes to the tail
and keeps its hash, so a later request can still hit it; a freed block without a hash goes to the head,
to be reused first. Allocation pops the head: the least recently freed cached block is evicted lazily,
only when its memory is really needed. A hit on a free block takes it out of the queue.

A lookup (match) only reads the hash map, so it is its own peek (num_cached_tokens); allocate takes
the blocks of an admission's hit (touch).

Checked by: pytest -m ch3 (hypothesis against a brute-force model; greedy outputs unchanged).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from minillm.kv.paged import BlockManager, PrefixHit
from minillm.request import Sequence

ROOT_HASH = -1  # the "parent" of a first block: a fixed int, so hashes repeat across processes


def block_hash(parent: int | None, tokens: tuple[int, ...]) -> int:
    # Python hashes tuples of ints the same in every process (hash(None) may not be, before 3.12).
    return hash((ROOT_HASH if parent is None else parent, tokens))


class CachingBlockAllocator:
    """Free queue (an OrderedDict: O(1) pop-head, push-tail, push-head, remove) + hash -> block map."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free_queue: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self.ref_counts = [0] * num_blocks
        self.cached: dict[int, int] = {}  # hash -> block
        self.block_key: dict[int, tuple] = {}  # block -> (hash, parent hash, tokens): the collision guard
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        return len(self.free_queue)

    @property
    def free_blocks(self):
        return self.free_queue.keys()

    def allocate(self) -> int:
        if not self.free_queue:
            raise RuntimeError("out of KV blocks")
        block, _ = self.free_queue.popitem(last=False)
        if block in self.block_key:  # evict lazily: the block's old contents are overwritten now
            h = self.block_key.pop(block)[0]
            del self.cached[h]
            self.num_evictions += 1
        self.ref_counts[block] = 1
        return block

    def free(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"double free of block {block}")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_queue[block] = None  # tail: evicted last
            if block not in self.block_key:
                self.free_queue.move_to_end(block, last=False)  # head: nothing worth keeping

    def lookup(self, h: int, parent: int | None, tokens: tuple[int, ...]) -> int | None:
        block = self.cached.get(h)
        if block is None or self.block_key[block][1:] != (parent, tokens):
            return None  # a miss, or a hash collision caught by comparing the tokens
        return block

    def touch(self, block: int) -> None:
        """Take a reference to a cached block (reviving it from the free queue if nobody held it)."""
        if self.ref_counts[block] == 0:
            del self.free_queue[block]
        self.ref_counts[block] += 1

    def forget_all(self) -> None:
        """Drop every hash; the blocks stay free, now first in line (nothing in them is worth keeping)."""
        for block in self.block_key:
            self.free_queue.move_to_end(block, last=False)
        self.cached.clear()
        self.block_key.clear()

    def register(self, block: int, h: int, parent: int | None, tokens: tuple[int, ...]) -> None:
        if h not in self.cached and block not in self.block_key:
            self.cached[h] = block
            self.block_key[block] = (h, parent, tokens)


@dataclass(frozen=True)
class HashHit(PrefixHit):
    hashes: list[int]  # the chained hash of each hit block: the request's chain continues from them


class PrefixCachingBlockManager(BlockManager):
    """BlockManager whose prefills start from the longest cached prefix of full blocks."""

    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.01):
        super().__init__(num_blocks, block_size, watermark)
        self.allocator = CachingBlockAllocator(num_blocks)
        self.hashes: dict[int, list[int]] = {}  # request id -> hashes of its computed full blocks

    def reset_prefix_cache(self) -> bool:
        if self.allocator.num_free != self.num_blocks:
            return False  # a running sequence's blocks are cached too: they cannot be forgotten now
        self.allocator.forget_all()
        return True

    def _chain(self, tokens: list[int], num_blocks: int):
        """Yield (index, hash, parent, block tokens) for the first num_blocks full blocks."""
        parent = None
        bs = self.block_size
        for i in range(num_blocks):
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = block_hash(parent, chunk)
            yield i, h, parent, chunk
            parent = h

    def match(self, seq: Sequence) -> HashHit:
        """Cached blocks covering the longest prefix of seq, at most max_hit_blocks of them. Reads only:
        allocate takes the references."""
        blocks, hashes = [], []
        for _, h, parent, chunk in self._chain(seq.token_ids, self.max_hit_blocks(seq)):
            block = self.allocator.lookup(h, parent, chunk)
            if block is None:
                break
            blocks.append(block)
            hashes.append(h)
        return HashHit(blocks, len(blocks) * self.block_size, hashes)

    def num_cached_tokens(self, seq: Sequence) -> int:
        return self.match(seq).num_cached_tokens if not seq.block_table else 0

    def can_allocate(self, seq: Sequence, num_tokens: int | None = None, hit: HashHit | None = None) -> bool:
        hits = (hit if hit is not None else self.match(seq)).blocks
        revived = sum(1 for b in hits if self.allocator.ref_counts[b] == 0)  # hits that leave the free queue
        need = max(
            0, self.blocks_for(max(num_tokens or seq.num_tokens, len(hits) * self.block_size)) - len(hits)
        )
        return need + revived <= self.num_free_blocks - self.watermark_blocks

    def allocate(self, seq: Sequence, num_tokens: int | None = None, hit: HashHit | None = None) -> None:
        if not seq.block_table:
            hit = hit if hit is not None else self.match(seq)
            for b in hit.blocks:
                self.allocator.touch(b)
            self.hashes[seq.request_id] = list(hit.hashes)
            self._start_from(seq, hit)
        self._grow(seq, num_tokens or seq.num_tokens)
        # The prompt's full blocks are cached now, before this step computes them: a request admitted
        # in the same step can already hit them, because every layer writes the whole batch's K/V
        # (slot_mapping) before any sequence attends (vLLM V1 caches at allocation for the same reason).
        # Not a newest token still on the device (async scheduling): its block waits for on_computed.
        known = seq.num_tokens - seq.awaiting_token
        self._register(seq, min(num_tokens or seq.num_tokens, known) // self.block_size)

    def on_computed(self, seq: Sequence) -> None:
        """After a step: blocks that decoding has just filled become cached too."""
        self._register(seq, seq.num_computed_tokens // self.block_size)

    def _register(self, seq: Sequence, full: int) -> None:
        hashes = self.hashes.setdefault(seq.request_id, [])
        parent = hashes[-1] if hashes else None
        bs = self.block_size
        for i in range(len(hashes), full):
            chunk = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = block_hash(parent, chunk)
            self.allocator.register(seq.block_table[i], h, parent, chunk)
            hashes.append(h)
            parent = h

    def free(self, seq: Sequence) -> None:
        super().free(seq)  # reversed order: a sequence's tail blocks are evicted before its head
        self.hashes.pop(seq.request_id, None)
