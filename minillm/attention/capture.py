"""Chapter 6: PagedAttention whose decode steps can be replayed as CUDA graphs.

A CUDA graph records kernel launches with their arguments: the addresses of every tensor they read and
write. Replaying it runs the same kernels on the same addresses, so a replayed step cannot be handed
freshly allocated metadata: it must find its block tables, slot mapping and mask in buffers that
existed at capture. This backend keeps those buffers (init_capture_graph), gives a graph metadata over
them for a batch of a captured size (prepare_for_capture), and copies a real decode step into them
before each replay, padding the rows the step does not use (prepare_for_replay): padded rows write
their K/V into the dummy block and attend to its first slot, so they touch no real block. Only the
table columns the step uses are copied; the mask hides the keys of the blocks further right.

Checked by: pytest -m ch6 -k graph (replay without capture on the CPU, against eager).
"""

from __future__ import annotations

import torch

from minillm.attention.metadata import AttentionMetadata, PaddedGroup, StepInputs, pad_decode_step
from minillm.attention.paged import PagedAttention


class CapturablePagedAttention(PagedAttention):
    """PagedAttention + GraphCaptureBackend (minillm/attention/backend.py). Eager steps use
    PagedAttention.prepare; decode steps of a captured size use the fixed buffers below."""

    def init_capture_graph(self, max_num_seqs: int, max_num_blocks: int) -> None:
        dev, bs, dummy = self.kv.k_cache[0].device, self.kv.block_size, self.kv.dummy_block
        i64 = dict(dtype=torch.int64, device=dev)
        # Flat buffers: the graph of n rows over w-block tables views their first n*w entries as a
        # contiguous (n, w), the same strides an eager decode step has, so one compiled graph serves both.
        self.cg_slot_mapping = torch.full((max_num_seqs,), dummy * bs, **i64)  # (N,)
        self.cg_block_tables = torch.full((max_num_seqs * max_num_blocks,), dummy, **i64)  # (N*W,)
        self.cg_context_lens = torch.ones(max_num_seqs, **i64)  # (N,): a padded row sees one key
        self.cg_mask = torch.zeros(max_num_seqs * max_num_blocks * bs, dtype=torch.bool, device=dev)
        self.cg_key_positions = torch.arange(max_num_blocks * bs, device=dev)  # (W*bs,)

    def graph_views(self, n: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, w) block tables and (n, 1, w*bs) mask over the front of the flat buffers."""
        keys = w * self.kv.block_size
        return self.cg_block_tables[: n * w].view(n, w), self.cg_mask[: n * keys].view(n, 1, keys)

    def prepare_for_capture(self, num_seqs: int, num_blocks: int) -> AttentionMetadata:
        """Metadata of a decode batch of num_seqs rows over num_blocks-wide tables: views of the buffers."""
        tables, mask = self.graph_views(num_seqs, num_blocks)
        group = PaddedGroup(
            q_index=None,  # one query per row: the flat layout is already (n, 1)
            kv_index=tables,  # (n, w)
            mask=mask,  # (n, 1, w*bs)
            out_index=None,
            tokens=None,
        )
        return AttentionMetadata(self.cg_slot_mapping[:num_seqs], (group,))

    def prepare_for_replay(self, step: StepInputs, num_seqs: int, num_blocks: int) -> None:
        """Copy a decode step of B <= num_seqs rows into the buffers, padding rows B..num_seqs-1."""
        B, bs, dummy = step.num_seqs, self.kv.block_size, self.kv.dummy_block
        tables, ctx = pad_decode_step(step, num_seqs, num_blocks)  # (n, W <= w), (n,)
        tables_view, mask_view = self.graph_views(num_seqs, num_blocks)
        tables_view[:, : tables.shape[1]].copy_(torch.from_numpy(tables), non_blocking=True)
        self.cg_context_lens[:num_seqs].copy_(torch.from_numpy(ctx), non_blocking=True)
        self.cg_slot_mapping[:B].copy_(step.slot_mapping)
        self.cg_slot_mapping[B:num_seqs].fill_(dummy * bs)
        keys = self.cg_key_positions[: num_blocks * bs]  # (w*bs,)
        torch.lt(keys[None, None, :], self.cg_context_lens[:num_seqs, None, None], out=mask_view)
