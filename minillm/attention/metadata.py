"""The batch description every attention backend receives (built once per step by the model runner).

A step holds B sequences; sequence b contributes q_len[b] new tokens (a whole prompt, a prefill chunk,
or one decode token), laid out back to back in a flat dimension T = sum(q_len). Names follow vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttentionMetadata:
    cu_seqlens_q: torch.Tensor  # (B+1,) int32: sequence b's new tokens are [cu[b], cu[b+1]) of T
    context_lens: torch.Tensor  # (B,) int32: KV length of sequence b after this step (cached + new)
    slot_mapping: torch.Tensor  # (T,) int64: where each new token's K/V is written in the cache
    block_tables: torch.Tensor  # (B, max_blocks) int32: cache blocks of each sequence (rows for ch1)
    seq_ids: torch.Tensor  # (T,) int64: which of the B sequences each token belongs to
    max_seqlen_q: int  # max(q_len), to size padded buffers
    max_context_len: int  # max(context_lens)
    q_lens_host: list[int] | None = None  # the same lengths on the host, to split batches without a sync
    context_lens_host: list[int] | None = None
    scratch: dict = field(default_factory=dict, repr=False)  # per-step values a backend derives once

    @property
    def num_seqs(self) -> int:
        return self.context_lens.shape[0]

    def _host(self):
        if self.q_lens_host is None:
            self.q_lens_host = (self.cu_seqlens_q[1:] - self.cu_seqlens_q[:-1]).tolist()
            self.context_lens_host = self.context_lens.tolist()
        return self.q_lens_host, self.context_lens_host

    def subset(self, idx: list[int]) -> tuple[AttentionMetadata, torch.Tensor]:
        """Metadata of sequences idx alone, and the indices of their tokens in this batch's T."""
        q_lens, ctx = self._host()
        dev = self.context_lens.device
        starts = [0]
        for n in q_lens:
            starts.append(starts[-1] + n)
        tokens = [t for b in idx for t in range(starts[b], starts[b + 1])]
        sub_q, sub_ctx = [q_lens[b] for b in idx], [ctx[b] for b in idx]
        cu = [0]
        for n in sub_q:
            cu.append(cu[-1] + n)
        rows = torch.tensor(idx, dtype=torch.long, device=dev)
        sub = AttentionMetadata(
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=dev),
            context_lens=self.context_lens[rows],
            slot_mapping=self.slot_mapping[:0],  # K/V are written before the split
            block_tables=self.block_tables[rows],
            seq_ids=torch.tensor(
                [i for i, n in enumerate(sub_q) for _ in range(n)], dtype=torch.long, device=dev
            ),
            max_seqlen_q=max(sub_q),
            max_context_len=max(sub_ctx),
            q_lens_host=sub_q,
            context_lens_host=sub_ctx,
        )
        return sub, torch.tensor(tokens, dtype=torch.long, device=dev)

    def split_decodes(self) -> list[tuple[AttentionMetadata, torch.Tensor | None]]:
        """A mixed batch as two homogeneous ones: sequences with one new token (decodes) and the rest
        (prefills, chunks). Padding a decode row to a chunk's length would cost it the chunk's work.
        Returns [(metadata, token indices or None for the whole batch)], computed once per step."""
        if "groups" not in self.scratch:
            q_lens, _ = self._host()
            decodes = [b for b, n in enumerate(q_lens) if n == 1]
            others = [b for b, n in enumerate(q_lens) if n > 1]
            if decodes and others:
                self.scratch["groups"] = [self.subset(decodes), self.subset(others)]
            else:
                self.scratch["groups"] = [(self, None)]
        return self.scratch["groups"]

    @property
    def query_start(self) -> torch.Tensor:
        """(B,) absolute position of each sequence's first new token: context_len - q_len."""
        q_lens = self.cu_seqlens_q[1:] - self.cu_seqlens_q[:-1]
        return self.context_lens - q_lens
