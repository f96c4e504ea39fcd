"""Attention backends. The model calls `backend.forward(layer_idx, q, k, v, meta)`; a backend owns the
KV cache layout it reads and writes. torch_ref.py is the slow, obviously-correct oracle for all of them.
"""

from minillm.attention.metadata import AttentionMetadata

__all__ = ["AttentionMetadata"]
