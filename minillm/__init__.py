"""minillm: an educational LLM inference engine, grown chapter by chapter.

from minillm import LLM, SamplingParams
outs = LLM(stage="naive").generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0))
"""

from pathlib import Path

from minillm.config import STAGES, EngineConfig
from minillm.llm import LLM
from minillm.request import RequestMetrics, RequestOutput, SamplingParams

# The embedded default checkpoint, trained by chapters/ch00_model (a standard HF folder).
DEFAULT_MODEL = str(Path(__file__).parent / "assets" / "pystd-llama")

__all__ = [
    "DEFAULT_MODEL",
    "LLM",
    "STAGES",
    "EngineConfig",
    "RequestMetrics",
    "RequestOutput",
    "SamplingParams",
]
