"""Chapter 3: SGLang's RadixAttention prefix cache (Zheng et al., 2024), over paged KV blocks.

The cache is a radix tree of token sequences. Each node holds a block-aligned run of tokens (its key)
and the KV blocks that store them; children are keyed by the tokens of their first block, so a lookup
walks one block at a time. A request's prompt is matched against the tree (a match that ends inside a
node splits it), its matched blocks are reused, and its own blocks are inserted as it computes them.
Questions that admit nobody (how much is cached? for longest-prefix-match ordering) peek instead:
peek_prefix walks the same path without splitting a node or touching its LRU time.

Nodes on a running request's path are locked (lock_ref counts the requests below a node, and a lock
is taken on the whole path to the root), so their blocks cannot be evicted. Unlocked leaves are evicted
least recently used first; when a leaf goes, its parent may become an evictable leaf in turn.
evictable_size + protected_size always equals the number of cached blocks.

Checked by: pytest -m ch3 (hypothesis against a brute-force set of cached sequences).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from minillm.kv.paged import BlockAllocator, BlockManager, PrefixHit
from minillm.request import Sequence


class TreeNode:
    _ids = itertools.count()

    def __init__(
        self, key: tuple[int, ...] = (), blocks: list[int] | None = None, parent: TreeNode | None = None
    ):
        self.id = next(TreeNode._ids)
        self.key = key  # tokens, a multiple of block_size
        self.blocks = blocks or []  # one KV block per block_size tokens of key
        self.parent = parent
        self.children: dict[tuple[int, ...], TreeNode] = {}  # first block's tokens -> child
        self.lock_ref = 0
        self.last_access = 0

    def __lt__(self, other: TreeNode) -> bool:  # heap order: least recently used first
        return (self.last_access, self.id) < (other.last_access, other.id)


class RadixCache:
    def __init__(self, block_size: int, allocator: BlockAllocator):
        self.block_size = block_size
        self.allocator = allocator  # the tree holds one reference on every block it stores
        self.root = TreeNode()
        self.root.lock_ref = 1  # never evicted
        self.evictable_size = 0  # blocks in nodes with lock_ref == 0
        self.protected_size = 0  # blocks in locked nodes
        self._clock = itertools.count(1)
        self.num_evicted_blocks = 0

    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    def _chunks(self, tokens) -> list[tuple[int, ...]]:
        bs = self.block_size
        return [tuple(tokens[i : i + bs]) for i in range(0, len(tokens) - len(tokens) % bs, bs)]

    def match_prefix(self, tokens) -> tuple[list[int], TreeNode]:
        """Blocks of the longest cached prefix of tokens (whole blocks only), and the deepest node
        reached. A match ending inside a node splits it there, so the returned node covers exactly it;
        every node on the path becomes the most recently used."""
        return self._match(self._chunks(tokens))

    def peek_prefix(self, tokens) -> int:
        """How many whole blocks of tokens match_prefix would return; changes nothing (no split, no
        LRU touch)."""
        return sum(n for _, n in self._descend(self._chunks(tokens)))

    def _match(self, chunks) -> tuple[list[int], TreeNode]:
        node, blocks = self.root, []
        now = next(self._clock)
        for child, n in self._descend(chunks):
            child.last_access = now
            if n < len(child.blocks):
                child = self._split(child, n)
            blocks += child.blocks
            node = child
        return blocks, node

    def _descend(self, chunks):
        """Yield (node, n) down the longest match of chunks: node matches its first n blocks; only the
        last node may match partly (n < len(node.blocks)). The caller may split that last node."""
        node, i = self.root, 0
        while i < len(chunks) and chunks[i] in node.children:
            node = node.children[chunks[i]]
            n = self._common_blocks(node, chunks, i)
            partial = n < len(node.blocks)
            yield node, n
            if partial:
                return
            i += n

    def _common_blocks(self, node: TreeNode, chunks, start: int) -> int:
        bs = self.block_size
        n = 0
        while (
            n < len(node.blocks)
            and start + n < len(chunks)
            and node.key[n * bs : (n + 1) * bs] == chunks[start + n]
        ):
            n += 1
        return n

    def _split(self, node: TreeNode, n: int) -> TreeNode:
        """Cut node after its first n blocks: a new parent holds them, node keeps the rest."""
        bs = self.block_size
        top = TreeNode(node.key[: n * bs], node.blocks[:n], node.parent)
        top.lock_ref, top.last_access = node.lock_ref, node.last_access
        top.children = {node.key[n * bs : (n + 1) * bs]: node}
        node.parent.children[node.key[:bs]] = top
        node.key, node.blocks, node.parent = node.key[n * bs :], node.blocks[n:], top
        return top

    def insert(self, tokens, blocks: list[int]) -> TreeNode:
        """Cache the full blocks of tokens (stored in blocks); returns the deepest node. Blocks already
        cached for the same tokens are kept as they are (the caller's duplicates stay the caller's)."""
        chunks = self._chunks(tokens)[: len(blocks)]
        matched, node = self._match(chunks)
        rest = len(chunks) - len(matched)
        if rest:
            new = TreeNode(tuple(x for c in chunks[len(matched) :] for x in c), blocks[len(matched) :], node)
            new.last_access = next(self._clock)
            for b in new.blocks:
                self.allocator.incref(b)  # the tree's own reference
            node.children[chunks[len(matched)]] = new
            self.evictable_size += len(new.blocks)
            node = new
        return node

    def lock(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.blocks)
                self.protected_size += len(node.blocks)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref == 1:
                self.evictable_size += len(node.blocks)
                self.protected_size -= len(node.blocks)
            node.lock_ref -= 1
            node = node.parent

    def evict(self, num_blocks: int) -> int:
        """Free at least num_blocks blocks from unlocked leaves, least recently used first; returns how
        many were freed (fewer if everything left is locked)."""
        heap = [n for n in self.nodes() if not n.children and n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_blocks and heap:
            leaf = heapq.heappop(heap)
            for b in leaf.blocks:
                self.allocator.free(b)
            freed += len(leaf.blocks)
            self.evictable_size -= len(leaf.blocks)
            parent = leaf.parent
            del parent.children[leaf.key[: self.block_size]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, parent)
        self.num_evicted_blocks += freed
        return freed

    def nodes(self):
        """Every node but the root, depth first."""
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def cached_sequences(self) -> set[tuple[int, ...]]:
        """Every cached token prefix that ends on a block boundary (for tests and pictures)."""
        out = set()

        def walk(node, prefix):
            for i in range(1, len(node.blocks) + 1):
                out.add(prefix + node.key[: i * self.block_size])
            for child in node.children.values():
                walk(child, prefix + node.key)

        for child in self.root.children.values():
            walk(child, ())
        return out


@dataclass(frozen=True)
class RadixHit(PrefixHit):
    node: TreeNode  # the deepest node of the match, split to end exactly there: allocate locks it


class RadixBlockManager(BlockManager):
    """BlockManager whose prefills start from the radix tree's longest match. Each sequence holds a
    lock on the deepest tree node of its cached prefix; finished sequences insert everything they
    computed and drop their lock."""

    def __init__(self, num_blocks: int, block_size: int, watermark: float = 0.01):
        super().__init__(num_blocks, block_size, watermark)
        self.cache = RadixCache(block_size, self.allocator)
        self.locked: dict[int, TreeNode] = {}  # request id -> its locked node
        self.inserted: dict[int, int] = {}  # request id -> how many of its blocks are in the tree

    def reset_prefix_cache(self) -> bool:
        if self.locked or self.cache.protected_size:
            return False  # a running sequence holds a path of the tree
        evicted = self.cache.num_evicted_blocks  # a reset is not an eviction under memory pressure
        self.cache.evict(self.cache.evictable_size)
        self.cache.num_evicted_blocks = evicted
        assert self.cache.total_size == 0 and self.allocator.num_free == self.num_blocks
        return True

    def _hit_tokens(self, seq: Sequence) -> list[int]:
        return seq.token_ids[: self.max_hit_blocks(seq) * self.block_size]

    def match(self, seq: Sequence) -> RadixHit:
        """match_prefix: splits the node where the match ends and makes the path most recently used."""
        blocks, node = self.cache.match_prefix(self._hit_tokens(seq))
        return RadixHit(blocks, len(blocks) * self.block_size, node)

    def num_cached_tokens(self, seq: Sequence) -> int:
        return self.cache.peek_prefix(self._hit_tokens(seq)) * self.block_size if not seq.block_table else 0

    @property
    def num_available_blocks(self) -> int:
        return self.num_free_blocks + self.cache.evictable_size

    def can_allocate(self, seq: Sequence, num_tokens: int | None = None, hit: RadixHit | None = None) -> bool:
        hit = hit if hit is not None else self.match(seq)
        # matched blocks in unlocked nodes stop being evictable once this sequence locks them
        evictable_hits, node = 0, hit.node
        while node is not self.cache.root:
            evictable_hits += len(node.blocks) if node.lock_ref == 0 else 0
            node = node.parent
        need = max(0, self.blocks_for(num_tokens or seq.num_tokens) - len(hit.blocks))
        return need <= self.num_available_blocks - evictable_hits - self.watermark_blocks

    def can_append(self, seq: Sequence, num_tokens: int | None = None, num_lookahead_slots: int = 0) -> bool:
        need = self.blocks_for((num_tokens or seq.num_tokens) + num_lookahead_slots) - len(seq.block_table)
        return need <= self.num_available_blocks

    def allocate(self, seq: Sequence, num_tokens: int | None = None, hit: RadixHit | None = None) -> None:
        target = num_tokens or seq.num_tokens
        prefilling = seq.num_computed_tokens < seq.num_prompt_tokens or not seq.block_table
        if not seq.block_table:  # admission (first, or after a preemption)
            hit = hit if hit is not None else self.match(seq)
            self.cache.lock(hit.node)
            self.locked[seq.request_id] = hit.node
            self.inserted[seq.request_id] = len(hit.blocks)
            for b in hit.blocks:
                self.allocator.incref(b)  # the sequence's reference, beside the tree's
            self._start_from(seq, hit)
        missing = self.blocks_for(target) - len(seq.block_table)
        if missing > self.num_free_blocks:
            self.cache.evict(missing - self.num_free_blocks)
        self._grow(seq, target)
        if prefilling:
            # Insert the prompt's full blocks now (computed by this very step, before anyone attends:
            # every layer writes the batch's K/V first), so requests in the same batch share them.
            # Blocks filled while decoding are inserted when the request finishes, in one node.
            self._insert(seq, min(target, seq.num_tokens) // self.block_size)

    def _insert(self, seq: Sequence, num_full: int) -> None:
        if num_full <= self.inserted[seq.request_id]:
            return  # no newly full block
        self.inserted[seq.request_id] = num_full
        node = self.cache.insert(seq.token_ids[: num_full * self.block_size], seq.block_table[:num_full])
        old = self.locked[seq.request_id]
        self.cache.lock(node)
        self.cache.unlock(old)
        self.locked[seq.request_id] = node

    def free(self, seq: Sequence) -> None:
        """Finished or preempted: everything computed is in the tree; drop the lock and own references."""
        self._insert(seq, seq.num_computed_tokens // self.block_size)
        self.cache.unlock(self.locked.pop(seq.request_id))
        del self.inserted[seq.request_id]
        super().free(seq)
