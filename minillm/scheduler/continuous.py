"""Chapter 2: continuous batching with prefill first (vLLM V0's default, nano-vllm's scheduler).

Every step the batch is re-formed. If waiting requests fit (a free sequence slot, room in the token
budget, and free blocks for their whole prompt), the step prefills them. Otherwise it decodes one token
for every running sequence, giving a sequence a new block when its last one is full. When no block is
left, the most recently admitted running sequence is preempted: its blocks are freed and it goes back
to the head of the waiting queue, to be recomputed (prompt + what it generated so far) when blocks
return. Greedy outputs do not change; only time is lost.

Checked by: pytest -m ch2.
"""

from __future__ import annotations

from collections import deque

from minillm.kv.paged import PagedKVCache
from minillm.request import Sequence, SequenceStatus
from minillm.scheduler import ScheduledBatch


class ContinuousScheduler:
    def __init__(
        self, max_num_seqs: int, max_num_batched_tokens: int, kv: PagedKVCache, policy: str = "fcfs"
    ):
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.kv = kv
        self.blocks = kv.manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the last one is the preemption victim
        self.num_preemptions = 0
        self.policy = policy  # "fcfs", or "lpm": the waiting request with the longest cached prefix first

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def seqs_holding_kv(self) -> list[Sequence]:
        return self.running

    def schedule(self) -> ScheduledBatch | None:
        batch = self._schedule_prefills()
        if batch is None:
            batch = self._schedule_decodes()
        return batch

    def _order_waiting(self) -> None:
        if self.policy == "lpm" and len(self.waiting) > 1:
            # SGLang's longest-prefix-match: requests that share cached K/V run first, while it is cached
            # (a stable sort: ties keep arrival order).
            self.waiting = deque(sorted(self.waiting, key=lambda s: -self.blocks.num_cached_tokens(s)))

    def _chunk(self, remaining: int, budget: int) -> int:
        """Tokens of a prefill that this step computes: all of them, or none if they exceed the budget
        (chapter 4 cuts prefills into chunks)."""
        return remaining if remaining <= budget else 0

    def _admit_waiting(self, budget: int) -> tuple[list[Sequence], list[int]]:
        """Admit waiting requests in order while a sequence slot, the token budget and the pool allow;
        returns them with their new tokens. Each attempt matches the prefix cache once and hands the hit
        to can_allocate and allocate; the tokens it covers count as computed."""
        self._order_waiting()
        seqs, num_tokens = [], []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.awaiting_token:  # preempted with its newest token still on the device: next step
                break
            hit = self.blocks.match(seq)
            # the prompt, or prompt + outputs after preemption, less what the prefix cache already holds
            computed = max(seq.num_computed_tokens, hit.num_cached_tokens)
            n = self._chunk(seq.num_tokens - computed, budget)
            if n == 0 or not self.blocks.can_allocate(seq, computed + n, hit):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq, computed + n, hit)
            assert seq.num_computed_tokens == computed, "the cache matched what it promised"
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            seqs.append(seq)
            num_tokens.append(n)
            budget -= n
        return seqs, num_tokens

    def _schedule_prefills(self) -> ScheduledBatch | None:
        seqs, num_tokens = self._admit_waiting(self.max_num_batched_tokens)
        return ScheduledBatch(seqs, num_tokens) if seqs else None

    def _schedule_decodes(self) -> ScheduledBatch | None:
        scheduled = []
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING:  # preempted below to make room for an earlier one
                continue
            while not self.blocks.can_append(seq):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.may_append(seq)
                scheduled.append(seq)
        if not scheduled:
            return None
        return ScheduledBatch(scheduled, [1] * len(scheduled))

    def _preempt(self, seq: Sequence) -> None:
        """Recompute-style preemption: drop the sequence's K/V and queue it first in line."""
        self.requeue(seq)
        seq.num_preemptions += 1
        self.num_preemptions += 1

    def requeue(self, seq: Sequence) -> None:
        """Give back a running sequence's blocks (a prefix cache keeps what it computed) and queue it
        first in line, to be prefilled again. Preemption does this; so does jump-forward (chapter 5),
        which then changes the sequence's tail tokens: the K/V of the unchanged prefix is a cache hit."""
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def update(self, batch: ScheduledBatch) -> None:
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
            self.blocks.on_computed(seq)

    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)

    def abort(self, seq: Sequence) -> None:
        """Drop a request wherever it is: out of the waiting queue, or out of the batch with its blocks."""
        if seq in self.running:
            self.finish(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
