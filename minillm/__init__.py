"""minillm: an educational LLM inference engine, grown chapter by chapter.

from minillm import LLM, SamplingParams
outs = LLM(stage="naive").generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0))
"""

import os
import sys

import torch

# Chapter 7's Triton kernels run in Triton's interpreter where there is no CUDA GPU. The switch must be
# set before any @triton.jit is applied, and torch.compile's imports bring Triton's own helpers in early.
# If Triton was imported before this (torch._dynamo imports it), its own helpers were decorated for
# compiling and the interpreter cannot call them: chapter 7's backend then refuses with the fix.
TRITON_IMPORTED_TOO_EARLY = False
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    TRITON_IMPORTED_TOO_EARLY = "triton.language" in sys.modules
    os.environ["TRITON_INTERPRET"] = "1"

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
