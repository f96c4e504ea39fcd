"""The batch description every attention backend receives (built once per step by the model runner).

A step holds B sequences; sequence b contributes q_len[b] new tokens (a whole prompt, a prefill chunk,
or one decode token), laid out back to back in a flat dimension T = sum(q_len). Names follow vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def num_seqs(self) -> int:
        return self.context_lens.shape[0]

    @property
    def query_start(self) -> torch.Tensor:
        """(B,) absolute position of each sequence's first new token: context_len - q_len."""
        q_lens = self.cu_seqlens_q[1:] - self.cu_seqlens_q[:-1]
        return self.context_lens - q_lens
