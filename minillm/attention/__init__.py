"""Attention backends behind one seam (backend.py). The model calls `backend.forward(layer_idx, q, k,
v, meta)`; the runner calls `backend.prepare(step)` once per step. A backend reads and writes the KV
cache layout of minillm/kv; torch_ref.py is the slow, obviously-correct oracle for all of them.
"""

from minillm.attention.backend import AttentionBackend
from minillm.attention.metadata import AttentionMetadata, StepInputs

__all__ = ["AttentionBackend", "AttentionMetadata", "StepInputs"]
