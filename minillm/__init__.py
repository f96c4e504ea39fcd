"""minillm: an educational LLM inference engine, grown chapter by chapter.

from minillm import LLM, SamplingParams
outs = LLM(stage="naive").generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0))
"""

import os

import torch

# Chapter 7's Triton kernels run in Triton's interpreter where there is no CUDA GPU. The switch must be
# set before any @triton.jit is applied, and torch.compile's imports bring Triton's own helpers in early.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from minillm.config import DEFAULT_MODEL, STAGES, EngineConfig  # noqa: E402
from minillm.llm import LLM  # noqa: E402
from minillm.request import RequestMetrics, RequestOutput, SamplingParams  # noqa: E402

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "STAGES",
    "EngineConfig",
    "RequestMetrics",
    "RequestOutput",
    "SamplingParams",
]
