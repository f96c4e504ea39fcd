"""Chapter 4: the unified token-budget scheduler (vLLM V1's design).

There are no prefill and decode phases. Every request has num_computed_tokens and num_tokens (prompt +
output so far), and each step moves requests towards num_computed_tokens == num_tokens within one
budget of max_num_batched_tokens tokens:

  1. running requests first, in admission order: a decoding one takes 1 token, one still prefilling takes
     its next chunk (at most long_prefill_token_threshold tokens, if set, and what is left of the budget);
     when blocks run out, the most recently admitted running request is preempted (recompute) and goes
     back to the head of the waiting queue;
  2. then, unless this step preempted someone, waiting requests (fcfs or lpm order) while the budget,
     max_num_seqs and the pool allow: prefix-cache hits count as computed, and the rest of the prompt
     may be cut into chunks.

Chunked prefill and mixed prefill+decode batches fall out of this: a long prompt no longer stalls every
running decode for a whole step, it shares steps with them. A request samples only in the step that
computes its last token.

Checked by: pytest -m ch4 (hypothesis over arrival patterns and budgets).
"""

from __future__ import annotations

from minillm.kv.paged import PagedKVCache
from minillm.request import SequenceStatus
from minillm.scheduler import ScheduledBatch
from minillm.scheduler.continuous import ContinuousScheduler


class UnifiedScheduler(ContinuousScheduler):
    """Chapter 2's queues, admission, preemption and bookkeeping; one budget loop replaces the phases."""

    def __init__(
        self,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        kv: PagedKVCache,
        policy: str = "fcfs",
        long_prefill_token_threshold: int = 0,
    ):
        super().__init__(max_num_seqs, max_num_batched_tokens, kv, policy)
        self.long_prefill_token_threshold = long_prefill_token_threshold  # 0: a chunk may take the budget

    def _chunk(self, remaining: int, budget: int) -> int:
        """A prefill's next chunk: as much as the budget (and long_prefill_token_threshold) allows."""
        n = min(remaining, budget)
        if self.long_prefill_token_threshold:
            n = min(n, self.long_prefill_token_threshold)
        return n

    def schedule(self) -> ScheduledBatch | None:
        budget = self.max_num_batched_tokens
        seqs, num_tokens = [], []
        preempted = False
        # 1. running requests: decodes and unfinished prefill chunks
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted below to make room for an earlier one
                continue
            n = self._chunk(seq.num_tokens - seq.num_computed_tokens, budget)
            target = seq.num_computed_tokens + n
            while not self.blocks.can_append(seq, target):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                self.blocks.may_append(seq, target)
                seqs.append(seq)
                num_tokens.append(n)
                budget -= n
        # 2. waiting requests, if nobody had to be preempted (or the preemption left the step empty: then
        #    the head of the queue, usually the request just preempted, may start again at once)
        if not preempted or not seqs:
            admitted, admitted_tokens = self._admit_waiting(budget)
            seqs += admitted
            num_tokens += admitted_tokens
        return ScheduledBatch(seqs, num_tokens) if seqs else None
