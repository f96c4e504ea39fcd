"""Chapter 7: Triton kernels for attention over the paged KV cache, and the backend that runs them.

  store.py    store_kvcache: this step's K/V into the cache through slot_mapping (puzzle 15)
  prefill.py  varlen causal FlashAttention that reads K/V through the block table (puzzle 14, paged)
  decode.py   paged decode: one pass per (sequence, head) (puzzle 16), then split-KV with GQA grouping
  backend.py  TritonAttention: the AttentionBackend that launches them, CUDA-graph capturable

Without a CUDA GPU the kernels run in Triton's interpreter: TRITON_INTERPRET=1 is set by `import minillm`,
before any @triton.jit runs, because the decorator decides between compiling and interpreting when it
is applied, Triton's own helpers (tl.zeros, tl.sum) included; if Triton came in first, this module
refuses with the fix rather than fail inside a kernel.
The puzzles' reference solutions for puzzles 15 and 16 are these kernels (puzzles/solutions/attention.py
imports them).
"""

import os

import torch

import minillm  # sets TRITON_INTERPRET on a machine without CUDA

if minillm.TRITON_IMPORTED_TOO_EARLY:
    raise ImportError(
        "Triton was imported before minillm on a machine without CUDA, so its helpers are compiled-mode"
        " functions the interpreter cannot run: set TRITON_INTERPRET=1 in the environment, or import"
        " minillm before torch._dynamo or triton"
    )


def interpreting() -> bool:
    """True when kernels run in Triton's interpreter (NumPy on the CPU), not compiled for a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def bf16_dot_workaround(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float32 copies for the kernels that call tl.dot, under the interpreter only. Triton's interpreter
    keeps bfloat16 as its raw 16-bit patterns (uint16) and its tl.dot multiplies those integers, so a
    bfloat16 dot returns garbage on the CPU. The output keeps its dtype; on a GPU nothing changes."""
    return tuple(t.float() for t in tensors)
