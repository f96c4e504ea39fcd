"""EngineConfig and the stage presets.

A stage is a named set of defaults for the orthogonal knobs below; every chapter adds one stage and
the engine stays one engine. `LLM(stage="naive", block_size=32)` starts from a preset and overrides.
Stages land chapter by chapter: STAGES lists those that exist.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from minillm.request import SEED_MAX, SEED_MIN

# The embedded default checkpoint, trained by chapters/ch00_model (a standard HF folder).
DEFAULT_MODEL = str(Path(__file__).parent / "assets" / "pystd-llama")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineConfig:
    stage: str = "naive"
    device: str = "cpu"
    dtype: str | None = None  # None: float32 on CPU (exact parity tests), bfloat16 on CUDA
    seed: int = 0  # seeds dummy weights and the sampler of requests without their own seed
    # "none" (recompute everything, ch1 baseline) | "contiguous" (ch1) | "paged" (ch2)
    kv_cache: str = "contiguous"
    kv_cache_tokens: int = 8192  # KV memory budget, in token slots, shared by all sequences
    gpu_memory_utilization: float | None = None  # on CUDA: size the paged pool from this fraction instead
    block_size: int = 16  # paged KV block size in tokens (chapter 2); vLLM's default too
    prefix_cache: str | None = None  # None | "hash" (vLLM) | "radix" (SGLang): reuse shared prefixes (ch3)
    schedule_policy: str = "fcfs"  # "fcfs" | "lpm": longest cached prefix first (SGLang), with a prefix cache
    max_num_seqs: int = 64  # most sequences in one batch
    max_num_batched_tokens: int = 2048  # most tokens in one forward (prompts are never split in ch1)
    max_model_len: int | None = None  # longest sequence; None: min(max positions, KV budget, token budget)
    scheduler: str = "static"  # "static": batch runs until its longest member ends (ch1) | "continuous" (ch2)
    # | "unified" (ch4): one token budget per step, chunked prefill, mixed prefill/decode batches
    long_prefill_token_threshold: int = 0  # unified: most prompt tokens of one request per step (0: no cap)
    # Requests with SamplingParams(regex=, json_schema=, choice=) (ch5): None rejects them;
    # "naive": walk the vocabulary at every step | "indexed": a precomputed token index (Outlines) |
    # "compressed": the index + jump-forward over forced text (SGLang's compressed FSM)
    constrained_decoding: str | None = None
    # Chapter 6: None (eager) | "default" | "max-autotune": the model step compiled by Inductor
    compile: str | None = None
    cuda_graphs: bool = False  # on CUDA: decode steps replayed as CUDA graphs captured at start-up
    # Chapter 7: "torch" (gather + SDPA, chapters 1-6) | "triton": kernels that read the paged cache in place
    attention: str = "torch"
    # Detokenizing, stop strings and outputs of step k done while step k+1 runs on the device (vLLM's
    # asynchronous output processing): each output comes one step later; the tokens are the same
    async_output: bool = False
    # The host schedules and launches step k+1 before it knows step k's tokens (vLLM's asynchronous
    # scheduling, SGLang's overlap scheduler): those tokens go from the sampler into the next step's
    # inputs on the device; the host reads them one step later. Includes async_output's deferral
    async_scheduling: bool = False

    def __post_init__(self):
        positive = ("kv_cache_tokens", "block_size", "max_num_seqs", "max_num_batched_tokens")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not SEED_MIN <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be an int in [-2**63, 2**64 - 1], got {self.seed!r}")
        if self.max_model_len is not None and (
            not isinstance(self.max_model_len, int) or self.max_model_len <= 1
        ):
            raise ValueError(f"max_model_len must be an int > 1, got {self.max_model_len!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.kv_cache not in ("none", "contiguous", "paged"):
            raise ValueError(f"kv_cache must be 'none', 'contiguous' or 'paged', got {self.kv_cache!r}")
        if self.scheduler not in ("static", "continuous", "unified"):
            raise ValueError(f"scheduler must be 'static', 'continuous' or 'unified', got {self.scheduler!r}")
        if self.scheduler != "static" and self.kv_cache != "paged":
            raise ValueError(f"scheduler={self.scheduler!r} needs kv_cache='paged'")
        if not isinstance(self.long_prefill_token_threshold, int) or self.long_prefill_token_threshold < 0:
            raise ValueError(
                f"long_prefill_token_threshold must be an int >= 0, got {self.long_prefill_token_threshold!r}"
            )
        if self.prefix_cache not in (None, "hash", "radix"):
            raise ValueError(f"prefix_cache must be None, 'hash' or 'radix', got {self.prefix_cache!r}")
        if self.schedule_policy not in ("fcfs", "lpm"):
            raise ValueError(f"schedule_policy must be 'fcfs' or 'lpm', got {self.schedule_policy!r}")
        if self.schedule_policy == "lpm" and self.prefix_cache is None:
            raise ValueError("schedule_policy='lpm' orders by cached prefix: it needs a prefix_cache")
        if self.prefix_cache is not None and self.kv_cache != "paged":
            raise ValueError("prefix_cache needs kv_cache='paged' (a stage from 'paged' on)")
        if self.constrained_decoding not in (None, "naive", "indexed", "compressed"):
            raise ValueError(
                "constrained_decoding must be None, 'naive', 'indexed' or 'compressed', "
                f"got {self.constrained_decoding!r}"
            )
        if self.constrained_decoding == "compressed" and (
            self.prefix_cache is None or self.scheduler == "static"
        ):
            raise ValueError(
                "constrained_decoding='compressed' re-prefills a request after a jump forward and reuses its"
                " K/V through the prefix cache: it needs a prefix_cache and a continuous or unified scheduler"
            )
        if self.compile not in (None, "default", "max-autotune"):
            raise ValueError(f"compile must be None, 'default' or 'max-autotune', got {self.compile!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        if self.cuda_graphs and self.kv_cache != "paged":
            raise ValueError("cuda_graphs=True captures paged decode steps: it needs kv_cache='paged'")
        if not isinstance(self.async_output, bool):
            raise ValueError(f"async_output must be True or False, got {self.async_output!r}")
        if not isinstance(self.async_scheduling, bool):
            raise ValueError(f"async_scheduling must be True or False, got {self.async_scheduling!r}")
        if self.async_scheduling and self.scheduler == "static":
            raise ValueError(
                "async_scheduling needs scheduler='continuous' or 'unified' (a stage from 'paged' on)"
            )
        if self.attention not in ("torch", "triton"):
            raise ValueError(f"attention must be 'torch' or 'triton', got {self.attention!r}")
        if self.attention == "triton" and self.kv_cache != "paged":
            raise ValueError("attention='triton' reads the paged cache: it needs kv_cache='paged'")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        if self.gpu_memory_utilization is not None and self.device == "cpu":
            warnings.warn(
                "gpu_memory_utilization is ignored on the CPU: kv_cache_tokens sizes the KV pool", stacklevel=3
            )
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but torch sees no CUDA GPU")

    @property
    def chunked_prefill(self) -> bool:
        return self.scheduler == "unified"

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype is None:
            return torch.float32 if self.device == "cpu" else torch.bfloat16
        return DTYPES[self.dtype]

    @classmethod
    def from_stage(cls, stage: str, **overrides) -> EngineConfig:
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r} is not available; stages: {', '.join(STAGES)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown engine option(s) {unknown}; options: {sorted(known)}")
        return replace(cls(), stage=stage, **{**STAGES[stage], **overrides})


# stage -> the knobs it sets; later chapters add their stage here.
STAGES: dict[str, dict] = {
    "naive": dict(kv_cache="contiguous", scheduler="static"),  # ch1
    "paged": dict(kv_cache="paged", scheduler="continuous"),  # ch2
    # ch3
    "radix": dict(kv_cache="paged", scheduler="continuous", prefix_cache="radix", schedule_policy="lpm"),
    # ch4
    "unified": dict(kv_cache="paged", scheduler="unified", prefix_cache="radix", schedule_policy="lpm"),
    # ch5
    "fsm": dict(
        kv_cache="paged",
        scheduler="unified",
        prefix_cache="radix",
        schedule_policy="lpm",
        constrained_decoding="compressed",
    ),
}
# ch6: stage fsm with the model step compiled; CUDA graphs apply on CUDA only (a CPU compiles without them)
STAGES["compiled"] = {**STAGES["fsm"], "compile": "default", "cuda_graphs": True}
# ch7: stage compiled with Triton attention kernels (on a CPU: the interpreter, and no compile, see build.py)
STAGES["triton"] = {**STAGES["compiled"], "attention": "triton"}
# LLM() runs the most advanced stage that starts at once: `compiled` spends its first minute or two
# compiling (and capturing on a GPU), so it is asked for by name.
DEFAULT_STAGE = "fsm"
