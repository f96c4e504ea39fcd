"""minillm: an educational LLM inference engine, grown chapter by chapter.

from minillm import LLM, SamplingParams
outs = LLM(stage="naive").generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0))
"""

from minillm.config import DEFAULT_MODEL, STAGES, EngineConfig
from minillm.llm import LLM
from minillm.request import RequestMetrics, RequestOutput, SamplingParams

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "STAGES",
    "EngineConfig",
    "RequestMetrics",
    "RequestOutput",
    "SamplingParams",
]
