"""The model runner: turns a scheduled batch into flat tensors and runs one forward.

Every sequence contributes its next num_new_tokens tokens to one flat batch (no padding at the model
level): input_ids[T], positions[T], slot_mapping[T], block_tables[B, max_blocks], context_lens[B],
cu_seqlens_q[B+1], and logits_indices (the last new token of each sequence that samples this step).
"""

from __future__ import annotations

import torch

from minillm.attention.metadata import AttentionMetadata
from minillm.scheduler import ScheduledBatch


def pad_block_tables(tables: list[list[int]]) -> list[list[int]]:
    width = max(1, max(len(t) for t in tables))
    return [t + [0] * (width - len(t)) for t in tables]


class ModelRunner:
    def __init__(self, model, attn_backend, kv, device: str):
        self.model, self.attn_backend, self.kv, self.device = model, attn_backend, kv, device

    def prepare(self, batch: ScheduledBatch):
        input_ids, positions, slots, seq_ids, cu, ctx, tables, logits_indices = (
            [],
            [],
            [],
            [],
            [0],
            [],
            [],
            [],
        )
        bs = self.kv.block_size if self.kv is not None else 0
        for b, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            if self.kv is not None:  # slot = physical block * block_size + offset in the block
                bt = seq.block_table
                slots += [bt[p // bs] * bs + p % bs for p in range(start, end)]
            seq_ids += [b] * n
            cu.append(cu[-1] + n)
            ctx.append(end)
            tables.append(seq.block_table)
            logits_indices.append(cu[-1] - 1)
        dev = self.device
        as_tensor = lambda x, dtype: torch.tensor(x, dtype=dtype, device=dev)  # noqa: E731
        meta = AttentionMetadata(
            cu_seqlens_q=as_tensor(cu, torch.int32),
            context_lens=as_tensor(ctx, torch.int32),
            slot_mapping=as_tensor(slots, torch.int64),
            block_tables=as_tensor(pad_block_tables(tables), torch.int32),  # (B, max_blocks)
            seq_ids=as_tensor(seq_ids, torch.int64),
            max_seqlen_q=max(batch.num_new_tokens),
            max_context_len=max(ctx),
            q_lens_host=list(batch.num_new_tokens),
            context_lens_host=ctx,
        )
        return as_tensor(input_ids, torch.int64), as_tensor(positions, torch.int64), meta, logits_indices

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, sample: list[int] | None = None) -> torch.Tensor:
        """Run one forward; returns float32 logits (S, V) at the last new token of the sequences listed
        in `sample` (indices into the batch; default all). A prefill chunk that does not reach the end
        of its prompt samples nothing, so it needs no logits."""
        input_ids, positions, meta, logits_indices = self.prepare(batch)
        hidden = self.model(input_ids, positions, self.attn_backend, meta)  # (T, H)
        if sample is not None:
            logits_indices = [logits_indices[i] for i in sample]
        idx = torch.tensor(logits_indices, dtype=torch.long, device=self.device)
        return self.model.compute_logits(hidden[idx])  # (S, V)
