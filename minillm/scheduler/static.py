"""Chapter 1: static batching, as in early serving systems and `model.generate` on a batch.

Up to max_num_seqs waiting requests form a batch (each with a KV row of max_model_len reserved), the
batch prefills its prompts in one step, then decodes one token per unfinished member per step. Nobody
joins until the longest member finishes: early finishers hold their rows idle, and waiting requests
wait. Continuous batching (chapter 2) removes both costs.

With kv_cache="none" the same schedule recomputes every sequence from its first token at every step.

Checked by: pytest -m ch1.
"""

from __future__ import annotations

from collections import deque

from minillm.kv.contiguous import ContiguousKVCache
from minillm.request import Sequence, SequenceStatus
from minillm.scheduler import ScheduledBatch


class StaticScheduler:
    def __init__(self, max_num_seqs: int, max_num_batched_tokens: int, kv: ContiguousKVCache | None):
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.kv = kv  # None: no KV cache, recompute everything each step
        self.waiting: deque[Sequence] = deque()
        self.batch: list[Sequence] = []  # the current static batch, finished members included

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def seqs_holding_kv(self) -> list[Sequence]:
        return self.batch

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or any(not s.is_finished for s in self.batch)

    def schedule(self) -> ScheduledBatch | None:
        if not self.batch:
            self._admit()
        running = [s for s in self.batch if not s.is_finished]
        if not running:
            return None
        if self.kv is None:
            for s in running:
                s.num_computed_tokens = 0  # nothing was kept: feed the whole sequence again
        return ScheduledBatch(running, [s.num_tokens - s.num_computed_tokens for s in running])

    def update(self, batch: ScheduledBatch) -> None:
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n

    def finish(self, seq: Sequence) -> None:
        """Called when seq finishes: its row stays reserved until the whole batch is done."""
        if all(s.is_finished for s in self.batch):
            self._release_batch()

    def abort(self, seq: Sequence) -> None:
        """Drop a request: out of the waiting queue, or (already marked finished) out of the batch."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.batch:
            self.finish(seq)

    def _admit(self) -> None:
        limit = self.max_num_seqs if self.kv is None else min(self.max_num_seqs, self.kv.num_free_rows)
        budget = self.max_num_batched_tokens
        while self.waiting and len(self.batch) < limit and self.waiting[0].num_prompt_tokens <= budget:
            seq = self.waiting.popleft()
            budget -= seq.num_prompt_tokens
            seq.status = SequenceStatus.RUNNING
            if self.kv is not None:
                seq.block_table = [self.kv.allocate_row()]
            self.batch.append(seq)

    def _release_batch(self) -> None:
        for seq in self.batch:
            for row in seq.block_table:
                self.kv.free_row(row)
            seq.block_table = []
        self.batch = []
