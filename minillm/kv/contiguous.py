"""Chapter 1: the contiguous KV cache of early serving systems.

Each running sequence owns one row of max_model_len slots, reserved whole at admission whatever the
sequence will really use; rows are returned when the sequence's batch ends. Slot s of the flat cache
is row s // max_model_len, position s % max_model_len, so writes go through a slot_mapping exactly as
they will with paged blocks (chapter 2), where a "row" becomes a block of block_size slots.

Checked by: pytest -m ch1.
"""

from __future__ import annotations

import torch


class ContiguousKVCache:
    def __init__(self, num_layers, num_rows, max_model_len, num_kv_heads, head_dim, dtype, device):
        if num_rows < 1:
            raise ValueError(
                f"kv_cache_tokens holds no row of max_model_len={max_model_len} tokens: raise kv_cache_tokens "
                "or lower max_model_len"
            )
        self.num_rows, self.max_model_len = num_rows, max_model_len
        self.dummy_block = num_rows  # one spare row that padded tokens write into (see PagedKVCache)
        shape = (num_rows + 1, max_model_len, num_kv_heads, head_dim)
        # zeros, not empty: masked slots still meet V in the product, and 0 * NaN from stale memory is NaN
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.free_rows = list(range(num_rows - 1, -1, -1))  # a stack: pop() gives row 0 first

    @property
    def num_free_rows(self) -> int:
        return len(self.free_rows)

    def allocate_row(self) -> int:
        if not self.free_rows:
            raise RuntimeError("no free KV row")
        return self.free_rows.pop()

    def free_row(self, row: int) -> None:
        if row in self.free_rows or not 0 <= row < self.num_rows:
            raise RuntimeError(f"row {row} is not allocated")
        self.free_rows.append(row)

    @property
    def block_size(self) -> int:
        """A row is one block of max_model_len slots: slot = row * max_model_len + position."""
        return self.max_model_len

    def usage(self, seqs) -> tuple[int, int, int]:
        """(slots holding K/V, slots reserved, slots in the pool) for the sequences holding rows."""
        used = sum(s.num_computed_tokens for s in seqs if s.block_table)
        reserved = (self.num_rows - self.num_free_rows) * self.max_model_len
        return used, reserved, self.num_rows * self.max_model_len

    @property
    def bytes_reserved(self) -> int:
        return sum(t[: self.num_rows].numel() * t.element_size() for t in self.k_cache + self.v_cache)
