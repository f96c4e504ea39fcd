"""The model runner: owns the step's device buffers, fills them in place, and runs one forward.

Every sequence contributes its next num_new_tokens tokens to one flat batch (no padding at the model
level). The runner allocates its buffers once, at their largest (max_num_batched_tokens tokens,
max_num_seqs sequences, block tables at the widest a sequence can need), and each step copies the
host-built values into the front of them:

  input_ids[T], positions[T], slot_mapping[T]     one entry per new token
  block_tables[B, W], context_lens[B], cu_seqlens_q[B+1]
  logits_indices[S]                               the last new token of each sequence that samples
  sampled[S]                                      the tokens the step before sampled (async scheduling)

With async scheduling (EngineConfig.async_scheduling) the host builds step k+1 before it knows step k's
tokens: such a token is a placeholder -(1 + r) in the sequence, r its row in `sampled`, and the input
ids take it from there on the device (SGLang's future token map), so no step waits for the host.

Everything host-side is built with numpy over whole arrays (no loop per token); the attention backend
then does its own host work once (prepare), and the forward is tensor work only. Fixed buffers are
what chapter 6's CUDA graphs need: a replay reads the addresses it was captured with.

Checked by: pytest -m ch1 (every stage against transformers), pytest -k runner.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from minillm.attention.backend import AttentionBackend
from minillm.attention.metadata import StepInputs, pad_tables, token_positions
from minillm.request import Sequence
from minillm.scheduler import ScheduledBatch


def new_token_ids(seq: Sequence, start: int, end: int) -> list[int]:
    """seq.token_ids[start:end] without building the whole list (a decode needs one token)."""
    P = seq.num_prompt_tokens
    if start >= P:
        return seq.output_token_ids[start - P : end - P]
    return seq.prompt_token_ids[start:end] + seq.output_token_ids[: max(0, end - P)]


class ModelRunner:
    def __init__(
        self,
        model,
        attn_backend: AttentionBackend | None,
        kv,
        device: str,
        *,
        max_num_tokens: int = 2048,
        max_num_seqs: int = 64,
        max_model_len: int = 2048,
    ):
        """kv: the cache the backend writes (None: no cache); its block_size and dummy_block shape the
        slot mapping. max_num_tokens: most tokens in one step (the no-cache baseline feeds whole
        sequences, so it may need max_num_seqs * max_model_len)."""
        self.model, self.attn_backend, self.kv, self.device = model, attn_backend, kv, device
        self.model_forward = model  # the forward of prefill and mixed steps
        self.decode_forward = model  # of decode-only steps (one token per sequence): chapter 6 compiles it
        self.block_size = kv.block_size if kv is not None else 0
        self.dummy_block = kv.dummy_block if kv is not None else 0
        self.max_num_tokens, self.max_num_seqs = max_num_tokens, max_num_seqs
        self.max_num_blocks = -(-max_model_len // self.block_size) if kv is not None else 1
        i32, i64 = dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_num_tokens, **i64)
        self.positions = torch.zeros(max_num_tokens, **i64)
        self.slot_mapping = torch.zeros(max_num_tokens, **i64)
        self.block_tables = torch.full((max_num_seqs, self.max_num_blocks), self.dummy_block, **i32)
        self.context_lens = torch.zeros(max_num_seqs, **i32)
        self.cu_seqlens_q = torch.zeros(max_num_seqs + 1, **i32)
        self.logits_indices = torch.zeros(max_num_seqs, **i64)
        self.sampled = torch.zeros(max_num_seqs, **i64)

    def _fill(self, buf: torch.Tensor, values: np.ndarray) -> torch.Tensor:
        """Copy values into the front of a persistent buffer; returns that view."""
        view = buf[tuple(slice(0, n) for n in values.shape)]
        view.copy_(torch.from_numpy(values), non_blocking=True)
        return view

    def prepare(self, batch: ScheduledBatch, sample: list[int] | None = None):
        """Fill the buffers for this batch. Returns (input_ids (T,), positions (T,), the backend's
        metadata, logits_indices (S,)); sample lists the batch rows that sample (default: all)."""
        input_ids, positions, step, logits_indices = self.fill(batch, sample)
        meta = self.attn_backend.prepare(step) if self.attn_backend is not None else step
        return input_ids, positions, meta, logits_indices

    def fill(self, batch: ScheduledBatch, sample: list[int] | None = None):
        """Copy this batch into the front of the buffers: (input_ids, positions, StepInputs, logits_indices)."""
        seqs = batch.seqs
        B = len(seqs)
        q_lens = np.asarray(batch.num_new_tokens, dtype=np.int64)  # (B,)
        start = np.fromiter((s.num_computed_tokens for s in seqs), np.int64, B)  # (B,)
        ctx = start + q_lens  # (B,)
        T = int(q_lens.sum())
        if B > self.max_num_seqs or T > self.max_num_tokens:
            raise RuntimeError(f"a step of {B} sequences and {T} tokens exceeds the runner's buffers")
        cu = np.concatenate(([0], np.cumsum(q_lens)))  # (B+1,)
        seq_of_token, positions = token_positions(q_lens, ctx)  # (T,) each
        ids = itertools.chain.from_iterable(new_token_ids(s, a, b) for s, a, b in zip(seqs, start, ctx))
        input_ids = np.fromiter(ids, np.int64, T)
        tables = pad_tables([s.block_table for s in seqs], self.dummy_block)  # (B, W)
        if tables.shape[1] > self.max_num_blocks:
            raise RuntimeError(f"a block table of {tables.shape[1]} blocks exceeds the runner's width")
        if self.kv is not None:  # slot = physical block * block_size + offset in the block
            bs = self.block_size
            slots = tables[seq_of_token, positions // bs] * bs + positions % bs  # (T,)
        else:
            slots = np.zeros(0, np.int64)
        rows = np.arange(B) if sample is None else np.asarray(sample, dtype=np.int64)
        step = StepInputs(
            cu_seqlens_q=self._fill(self.cu_seqlens_q, cu.astype(np.int32)),
            context_lens=self._fill(self.context_lens, ctx.astype(np.int32)),
            slot_mapping=self._fill(self.slot_mapping, slots),
            block_tables=self._fill(self.block_tables, tables.astype(np.int32)),
            q_lens_host=q_lens,
            context_lens_host=ctx,
            block_tables_host=tables,
            block_size=self.block_size,
            dummy_block=self.dummy_block,
        )
        logits_indices = self._fill(self.logits_indices, (cu[1:] - 1)[rows])
        ids = self._fill(self.input_ids, input_ids)
        if T and input_ids.min() < 0:  # tokens the step before sampled: still on the device
            ids.copy_(torch.where(ids < 0, self.sampled[(-1 - ids).clamp_(min=0)], ids))
        return ids, self._fill(self.positions, positions), step, logits_indices

    @torch.inference_mode()
    def forward(self, input_ids, positions, meta, logits_indices) -> torch.Tensor:
        """float32 logits (S, V) at logits_indices."""
        step = meta if isinstance(meta, StepInputs) else meta.step
        fwd = self.decode_forward if step is not None and step.is_decode else self.model_forward
        hidden = fwd(input_ids, positions, self.attn_backend, meta)  # (T, H)
        return self.model.compute_logits(hidden[logits_indices])  # (S, V)

    @torch.inference_mode()
    def forward_prompt_logits(self, input_ids, positions, meta, logits_indices, prompt_indices):
        """forward, plus float32 logits (R, V) at prompt_indices: prompt positions whose next token's
        logprob a request asked for (chapter 9). Only steps that hold such a request come here, and
        they are prefills, so the eager forward serves (no captured graph to match)."""
        hidden = self.model_forward(input_ids, positions, self.attn_backend, meta)  # (T, H)
        rows = torch.cat([logits_indices, prompt_indices])  # (S + R,)
        logits = self.model.compute_logits(hidden[rows])  # (S + R, V)
        S = logits_indices.shape[0]
        return logits[:S], logits[S:]

    def execute(self, batch: ScheduledBatch, sample: list[int] | None = None) -> torch.Tensor:
        """prepare + forward. A prefill chunk that does not reach the end of its prompt samples
        nothing, so it needs no logits: sample lists the rows that do (indices into the batch)."""
        return self.forward(*self.prepare(batch, sample))
