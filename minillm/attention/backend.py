"""The seam between the model and attention: the AttentionBackend protocol.

The model calls exactly one thing per layer, `backend.forward(layer_idx, q, k, v, meta)`, and the
engine's runner calls `backend.prepare(step)` once per step before the forward. Everything that needs
Python (grouping decodes apart from prefill chunks, building index and mask tensors, choosing widths)
happens in prepare(); forward() is tensor work only, so a step's forward is a pure function of device
buffers: torch.compile traces it without guarding on Python values, and a CUDA graph can replay it.

Backends (chapter, file): NoCacheAttention (1, sdpa.py), ContiguousAttention (1, contiguous.py),
PagedAttention (2, paged.py), Triton kernels (7, triton/). torch_ref.py is the oracle for all of them.

Chapter 6 adds CUDA graphs. A captured graph bakes in the address of every tensor it reads, so the
metadata of a replayed step cannot be freshly allocated by prepare(): it must be copied into buffers
that existed at capture. That is why mini-sglang's backends have four verbs, not two: prepare
(eager steps), init_capture_graph (allocate the fixed buffers once, at their largest), prepare_for_capture
(metadata over those buffers for a dummy batch of a capture size) and prepare_for_replay (copy a real
step's metadata into them, padded to the captured size). GraphCaptureBackend names those three.

Checked by: pytest -m ch1 -k attention (every backend against torch_ref).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from minillm.attention.metadata import StepInputs


@runtime_checkable
class AttentionBackend(Protocol):
    def prepare(self, step: StepInputs) -> Any:
        """All host work of a step, once, before the forward: returns the metadata every layer reads."""
        ...

    def forward(
        self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: Any
    ) -> torch.Tensor:
        """q: (T, nh, d) this step's queries; k, v: (T, nkv, d) this step's keys and values, which a
        backend with a cache writes through meta before attending. Returns (T, nh, d). Tensor work only:
        no .item(), .tolist() or shapes chosen from Python ints."""
        ...


@runtime_checkable
class GraphCaptureBackend(AttentionBackend, Protocol):
    """A backend whose decode steps can be captured as CUDA graphs (chapter 6)."""

    def init_capture_graph(self, max_num_seqs: int, max_num_blocks: int) -> None:
        """Allocate, once, the metadata buffers every captured graph will read."""
        ...

    def prepare_for_capture(self, num_seqs: int, num_blocks: int) -> Any:
        """Metadata over those buffers for a dummy decode batch of num_seqs rows over block tables
        num_blocks wide (padded rows write into the dummy block)."""
        ...

    def prepare_for_replay(self, step: StepInputs, num_seqs: int, num_blocks: int) -> None:
        """Copy a real decode step's metadata into the buffers, padded to the captured size."""
        ...
