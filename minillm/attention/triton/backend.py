"""Chapter 7: the Triton attention backend (stage `triton`).

Per layer, one operator: store this step's K/V through slot_mapping, then attend with the kernel that
fits the step. A decode-only step runs split-KV paged decode (decode.py); anything else (prefill,
chunked prefill, a mixed step) runs the varlen prefill kernel over the block table, decode rows
included, in one launch (prefill.py). No gather, no padding, no mask: the kernels read the blocks in
place and stop at each sequence's context length, which is what chapter 2's torch backend could not do.

The operator is registered as a torch custom op (`minillm::triton_attention`) that mutates the cache,
as vLLM registers its attention: torch.compile sees one opaque call per layer, compiles everything
around it, and never traces into a kernel launch. The number of decode splits travels as the length of
a tensor (`splits`), not as a Python int, so a compiled graph does not specialise on it.

CUDA graphs (chapter 6's CUDAGraphRunner): the same four verbs as CapturablePagedAttention, but a graph
needs only one table width, the widest: the kernels loop to each row's context length, so a wide table
costs nothing but its bytes. Padded rows write into the dummy block and attend to its first key.

Checked by: pytest -m ch7 (stage triton equals stage unified, interpreter on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minillm.attention.metadata import StepInputs, pad_decode_step
from minillm.attention.triton.decode import MAX_SPLITS, decode_splits, paged_decode
from minillm.attention.triton.prefill import paged_prefill
from minillm.attention.triton.store import store_kvcache


@dataclass
class TritonMetadata:
    slot_mapping: torch.Tensor  # (T,) int64
    block_tables: torch.Tensor  # (B, W) int32, rows of one sequence's blocks
    context_lens: torch.Tensor  # (B,) int32, cached + new
    cu_seqlens_q: torch.Tensor  # (B+1,) int32
    splits: torch.Tensor | None  # decode-only step: (S,), S programs share each sequence's keys; else None
    max_q_len: int  # the prefill kernel's grid; 1 for a decode step
    step: StepInputs | None = None  # what it was built from (for reading; forward never does)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    splits: torch.Tensor | None,
    max_q_len: int,
) -> torch.Tensor:
    """q: (T, H, D); k, v: (T, KVH, D); caches (blocks, block_size, KVH, D). Returns (T, H, D)."""
    store_kvcache(k, v, k_cache, v_cache, slot_mapping)
    if splits is not None:  # one query per sequence: T == B
        return paged_decode(q, k_cache, v_cache, block_tables, context_lens, splits.shape[0])
    return paged_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, max_q_len)


triton_attention = torch.library.custom_op("minillm::triton_attention", mutates_args=("k_cache", "v_cache"))(
    attend
)


@triton_attention.register_fake
def _(q, k, v, k_cache, v_cache, slot_mapping, block_tables, context_lens, cu_seqlens_q, splits, max_q_len):
    return q.new_empty(q.shape)


class TritonAttention:
    """AttentionBackend + GraphCaptureBackend (minillm/attention/backend.py) over a PagedKVCache."""

    def __init__(self, kv):
        _, _, num_kv_heads, head_dim = kv.k_cache[0].shape
        if num_kv_heads & (num_kv_heads - 1):
            raise ValueError(
                f"the triton backend stores one token's {num_kv_heads} KV heads as one power-of-two tile;"
                " use attention='torch' for this model"
            )
        if head_dim < 16 or head_dim & (head_dim - 1):
            raise ValueError(
                f"the triton kernels tile head_dim as a power of two of at least 16 (tl.arange, tl.dot),"
                f" this model's is {head_dim}; use attention='torch'"
            )
        self.kv = kv
        self.num_kv_heads = num_kv_heads
        self.split_ids = torch.arange(MAX_SPLITS, device=kv.k_cache[0].device)  # (S_max,): views carry S

    def prepare(self, step: StepInputs) -> TritonMetadata:
        splits = None
        if step.is_decode:
            s = decode_splits(step.num_seqs, self.num_kv_heads, int(step.context_lens_host.max()))
            splits = self.split_ids[:s]
        return TritonMetadata(
            step.slot_mapping,
            step.block_tables,
            step.context_lens,
            step.cu_seqlens_q,
            splits,
            int(step.q_lens_host.max()) if step.num_seqs else 0,
            step,
        )

    def forward(self, layer_idx: int, q, k, v, meta: TritonMetadata) -> torch.Tensor:
        # the operator while torch.compile traces; eagerly the same function, without the op's dispatch
        op = triton_attention if torch.compiler.is_compiling() else attend
        return op(
            q,
            k,
            v,
            self.kv.k_cache[layer_idx],
            self.kv.v_cache[layer_idx],
            meta.slot_mapping,
            meta.block_tables,
            meta.context_lens,
            meta.cu_seqlens_q,
            meta.splits,
            meta.max_q_len,
        )

    # CUDA graphs (chapter 6's protocol)

    def init_capture_graph(self, max_num_seqs: int, max_num_blocks: int) -> None:
        dev, bs, dummy = self.kv.k_cache[0].device, self.kv.block_size, self.kv.dummy_block
        i32 = dict(dtype=torch.int32, device=dev)
        self.cg_slot_mapping = torch.full((max_num_seqs,), dummy * bs, dtype=torch.int64, device=dev)
        # flat: graph (n, w) views the first n*w entries as a contiguous (n, w)
        self.cg_block_tables = torch.full((max_num_seqs * max_num_blocks,), dummy, **i32)
        self.cg_context_lens = torch.ones(max_num_seqs, **i32)  # a padded row sees one key
        self.cg_cu_seqlens = torch.arange(max_num_seqs + 1, **i32)  # one query per row

    def prepare_for_capture(self, num_seqs: int, num_blocks: int) -> TritonMetadata:
        n, w = num_seqs, num_blocks
        s = decode_splits(n, self.num_kv_heads, w * self.kv.block_size)
        return TritonMetadata(
            self.cg_slot_mapping[:n],
            self.cg_block_tables[: n * w].view(n, w),
            self.cg_context_lens[:n],
            self.cg_cu_seqlens[: n + 1],
            self.split_ids[:s],
            1,
        )

    def prepare_for_replay(self, step: StepInputs, num_seqs: int, num_blocks: int) -> None:
        B = step.num_seqs
        # only the columns the step uses: the graph's table is as wide as max_model_len (a thousand
        # blocks at 16k), and the kernels stop at each row's context
        tables, ctx = pad_decode_step(step, num_seqs, num_blocks)  # (n, W), (n,)
        graph_tables = self.cg_block_tables[: num_seqs * num_blocks].view(num_seqs, num_blocks)
        graph_tables[:, : tables.shape[1]].copy_(torch.from_numpy(tables), non_blocking=True)
        self.cg_context_lens[:num_seqs].copy_(torch.from_numpy(ctx), non_blocking=True)
        self.cg_slot_mapping[:B].copy_(step.slot_mapping)
        self.cg_slot_mapping[B:num_seqs].fill_(self.kv.dummy_block * self.kv.block_size)
