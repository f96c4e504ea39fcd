"""What an attention backend receives: the step the runner built (StepInputs), and the padded layout a
torch backend derives from it once per step (AttentionMetadata).

A step holds B sequences; sequence b contributes q_len[b] new tokens (a whole prompt, a prefill chunk,
or one decode token), laid out back to back in a flat dimension T = sum(q_len). Names follow vLLM.
The host copies of the lengths travel with the device tensors, so a backend's prepare() never has to
read a device tensor back (no synchronisation) and its forward() never has to read anything at all.

Checked by: pytest -m ch1 -k attention, pytest -m ch4 -k attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StepInputs:
    """One step's batch, as the model runner filled it in: device views of its persistent buffers, and
    the same lengths and tables on the host."""

    cu_seqlens_q: torch.Tensor  # (B+1,) int32: sequence b's new tokens are [cu[b], cu[b+1]) of T
    context_lens: torch.Tensor  # (B,) int32: KV length of sequence b after this step (cached + new)
    slot_mapping: torch.Tensor  # (T,) int64: where each new token's K/V is written in the cache
    block_tables: torch.Tensor  # (B, W) int32: cache blocks of each sequence (rows for ch1), dummy-padded
    q_lens_host: np.ndarray  # (B,) int64
    context_lens_host: np.ndarray  # (B,) int64
    block_tables_host: np.ndarray  # (B, W) int64
    block_size: int = 0  # slots per block of the cache (ch1: a row of max_model_len); 0: no cache
    dummy_block: int = 0  # the block that padded rows write into and padded table entries point at

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens_host)

    @property
    def num_tokens(self) -> int:
        return int(self.q_lens_host.sum())

    @property
    def is_decode(self) -> bool:
        """Every sequence brings exactly one new token: the step CUDA graphs capture."""
        return self.num_seqs > 0 and bool((self.q_lens_host == 1).all())

    @classmethod
    def from_lengths(
        cls,
        q_lens,
        context_lens,
        block_tables=None,
        *,
        block_size: int = 0,
        dummy_block: int = 0,
        device: str | torch.device = "cpu",
    ) -> StepInputs:
        """A step from plain lists, for tests and notebooks: slot_mapping follows from the block tables
        (ragged lists are padded with dummy_block), as the runner computes it."""
        q = np.asarray(q_lens, dtype=np.int64)
        ctx = np.asarray(context_lens, dtype=np.int64)
        tables = pad_tables(block_tables or [[] for _ in q], dummy_block)
        cu = np.concatenate(([0], np.cumsum(q)))
        slots = slot_mapping(q, ctx, tables, block_size) if block_size else np.zeros(0, np.int64)
        as_t = lambda a, dtype: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(
            as_t(cu, torch.int32),
            as_t(ctx, torch.int32),
            as_t(slots, torch.int64),
            as_t(tables, torch.int32),
            q,
            ctx,
            tables,
            block_size,
            dummy_block,
        )


def pad_tables(tables: list[list[int]], fill: int) -> np.ndarray:
    """Ragged block tables -> (B, W) int64, W = the longest (at least 1), padded with fill."""
    width = max(1, max((len(t) for t in tables), default=0))
    out = np.full((len(tables), width), fill, dtype=np.int64)
    for b, t in enumerate(tables):
        out[b, : len(t)] = t
    return out


def token_positions(q_lens: np.ndarray, context_lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) the sequence of each new token and (T,) its absolute position, without a per-token loop."""
    seq_of_token = np.repeat(np.arange(len(q_lens)), q_lens)  # (T,)
    cu = np.concatenate(([0], np.cumsum(q_lens)))
    offset = np.arange(cu[-1]) - cu[:-1][seq_of_token]  # (T,) index among the sequence's new tokens
    return seq_of_token, (context_lens - q_lens)[seq_of_token] + offset


def pad_decode_step(step: StepInputs, num_seqs: int, num_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """A decode step padded to a captured graph of num_seqs rows over num_blocks-wide tables (chapter
    6): block tables (num_seqs, W) and context lengths (num_seqs,), int32; padded rows point at the
    dummy block and see one key. W = min(the step's widest table, num_blocks): a replay copies only
    these columns into the graph's table, since no row attends past its context, and what the columns
    further right hold (blocks of earlier steps) is never seen (masked, or not read at all)."""
    B, W = step.num_seqs, min(step.block_tables_host.shape[1], num_blocks)
    tables = np.full((num_seqs, W), step.dummy_block, dtype=np.int32)  # (n, W)
    tables[:B] = step.block_tables_host[:, :W]
    ctx = np.ones(num_seqs, dtype=np.int32)  # (n,)
    ctx[:B] = step.context_lens_host
    return tables, ctx


def slot_mapping(q_lens, context_lens, tables: np.ndarray, block_size: int) -> np.ndarray:
    """(T,) slot of each new token: block_table[p // block_size] * block_size + p % block_size."""
    seq_of_token, pos = token_positions(np.asarray(q_lens), np.asarray(context_lens))
    return tables[seq_of_token, pos // block_size] * block_size + pos % block_size


@dataclass
class PaddedGroup:
    """Sequences of one kind (decodes, or prefill chunks) laid out (b, Lq) for SDPA. Built on the host
    once per step; forward() only indexes with it, so every shape comes from a tensor."""

    q_index: torch.Tensor | None  # (b, Lq) int64: the token of T at each padded query (padding repeats a
    # real one); None for a batch of decodes alone, whose flat layout is already (B, 1)
    kv_index: torch.Tensor  # (b, nb) blocks (paged) or (b, Lk) slots (contiguous) or tokens (no cache)
    mask: torch.Tensor  # (b, Lq, Lk) bool: key j visible to the query at position p iff j <= p, j < ctx
    out_index: torch.Tensor | None  # (T_g,) int64: row * Lq + col of each real query; None if Lq == 1
    tokens: torch.Tensor | None  # (T_g,) int64: where the group's tokens sit in T; None: the whole batch


@dataclass
class AttentionMetadata:
    """What a padded torch backend's forward() reads, prepared once per step for all layers."""

    slot_mapping: torch.Tensor  # (T,) int64: where this step's K/V go (empty without a cache)
    groups: tuple[PaddedGroup, ...]  # one, or two for a mixed batch: decodes apart from prefill chunks
    step: StepInputs | None = None  # what it was built from (for reading, in notebooks; forward never does)
