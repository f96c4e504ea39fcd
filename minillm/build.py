"""A stage's parts: the EngineConfig knobs turned into classes, in one place.

  kv_cache       "none" -> no cache | "contiguous" -> ContiguousKVCache (ch1) | "paged" -> PagedKVCache (ch2)
  prefix_cache   None -> BlockManager | "hash" -> PrefixCachingBlockManager | "radix" -> RadixBlockManager (ch3)
  scheduler      "static" (ch1) | "continuous" (ch2) | "unified" (ch4)
  attention      follows the KV layout: NoCacheAttention | ContiguousAttention | PagedAttention (ch1-2);
                 "triton" -> TritonAttention over the paged cache (ch7, attention/triton/)
  compile        None -> eager | "default" / "max-autotune" -> decode steps' forward under Inductor (ch6)
  cuda_graphs    on CUDA: CapturablePagedAttention + CUDAGraphRunner, captured here (ch6, graphs.py)

A later chapter adds its knob's classes here and leaves engine.py alone.

Checked by: pytest -m ch1 (and every chapter's engine tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minillm.attention.capture import CapturablePagedAttention
from minillm.attention.contiguous import ContiguousAttention
from minillm.attention.paged import PagedAttention
from minillm.attention.sdpa import NoCacheAttention
from minillm.compile import compile_model
from minillm.config import EngineConfig
from minillm.graphs import CUDAGraphRunner
from minillm.kv.contiguous import ContiguousKVCache
from minillm.kv.paged import BlockManager, PagedKVCache
from minillm.kv.prefix_hash import PrefixCachingBlockManager
from minillm.kv.radix import RadixBlockManager
from minillm.model.configs import ModelConfig
from minillm.runner import ModelRunner
from minillm.scheduler.continuous import ContinuousScheduler
from minillm.scheduler.static import StaticScheduler
from minillm.scheduler.unified import UnifiedScheduler

BLOCK_MANAGERS = {None: BlockManager, "hash": PrefixCachingBlockManager, "radix": RadixBlockManager}


@dataclass
class StageParts:
    kv: ContiguousKVCache | PagedKVCache | None
    scheduler: StaticScheduler | ContinuousScheduler
    runner: ModelRunner


def default_max_model_len(config: EngineConfig, max_position_embeddings: int) -> int:
    if config.chunked_prefill:  # a long prompt spreads over several steps
        return min(max_position_embeddings, config.kv_cache_tokens)
    return min(max_position_embeddings, config.kv_cache_tokens, config.max_num_batched_tokens)


def check_max_model_len(c: EngineConfig, max_model_len: int, mc: ModelConfig) -> None:
    if max_model_len > mc.max_position_embeddings:
        raise ValueError(
            f"max_model_len={max_model_len} exceeds the model's max_position_embeddings="
            f"{mc.max_position_embeddings}"
        )
    if max_model_len > c.max_num_batched_tokens and not c.chunked_prefill:
        raise ValueError(
            f"max_model_len={max_model_len} exceeds max_num_batched_tokens={c.max_num_batched_tokens}:"
            " without chunked prefill a whole sequence must fit in one step"
        )


def num_kv_blocks(c: EngineConfig, mc: ModelConfig) -> int:
    """From kv_cache_tokens, or on a GPU from gpu_memory_utilization of the memory left after the weights."""
    if c.gpu_memory_utilization is None or not c.device.startswith("cuda"):
        return c.kv_cache_tokens // c.block_size
    free, total = torch.cuda.mem_get_info(c.device)
    budget = free - (1 - c.gpu_memory_utilization) * total
    bytes_per_block = (
        2 * mc.num_layers * c.block_size * mc.num_kv_heads * mc.head_dim * c.torch_dtype.itemsize
    )
    if budget < bytes_per_block:
        raise ValueError(
            f"gpu_memory_utilization={c.gpu_memory_utilization} leaves no GPU memory for a KV block"
        )
    return int(budget // bytes_per_block)


def triton_backend(kv):
    """Chapter 7's backend; Triton is imported only when a stage asks for it."""
    try:
        from minillm.attention.triton.backend import TritonAttention
    except ModuleNotFoundError as e:
        raise ValueError(
            f"attention='triton' needs the triton package ({e}); `pip install triton` (Linux wheels only)"
        ) from e
    except ImportError as e:  # Triton imported too early for its interpreter (attention/triton/__init__.py)
        raise ValueError(f"attention='triton': {e}") from e
    return TritonAttention(kv)


def build_stage(c: EngineConfig, model, mc: ModelConfig, max_model_len: int) -> StageParts:
    """The KV pool, the attention backend that reads it, the scheduler, and a runner over them."""
    layers, nkv, hd, dtype, dev = mc.num_layers, mc.num_kv_heads, mc.head_dim, c.torch_dtype, c.device
    max_num_tokens = c.max_num_batched_tokens
    graphs = False
    if c.kv_cache == "none":
        kv, backend = None, NoCacheAttention()
        max_num_tokens = c.max_num_seqs * max_model_len  # every step feeds whole sequences
    elif c.kv_cache == "contiguous":
        rows = min(c.max_num_seqs, c.kv_cache_tokens // max_model_len)
        kv = ContiguousKVCache(layers, rows, max_model_len, nkv, hd, dtype, dev)
        backend = ContiguousAttention(kv)
    else:
        manager = BLOCK_MANAGERS[c.prefix_cache]
        graphs = c.cuda_graphs and dev.startswith("cuda")
        kv = PagedKVCache(
            layers, num_kv_blocks(c, mc), c.block_size, nkv, hd, dtype, dev, manager_cls=manager
        )
        if c.attention == "triton":
            backend = triton_backend(kv)
        else:
            backend = CapturablePagedAttention(kv) if graphs else PagedAttention(kv)
    if c.scheduler == "static":
        scheduler = StaticScheduler(c.max_num_seqs, c.max_num_batched_tokens, kv)
    elif c.scheduler == "continuous":
        scheduler = ContinuousScheduler(c.max_num_seqs, c.max_num_batched_tokens, kv, c.schedule_policy)
    else:
        scheduler = UnifiedScheduler(
            c.max_num_seqs, c.max_num_batched_tokens, kv, c.schedule_policy, c.long_prefill_token_threshold
        )
    sizes = dict(max_num_tokens=max_num_tokens, max_num_seqs=c.max_num_seqs, max_model_len=max_model_len)
    if graphs and c.attention == "triton":
        # the kernels loop to each row's context length: one table width, the widest, serves every step
        runner = CUDAGraphRunner(model, backend, kv, dev, widths=[-(-max_model_len // c.block_size)], **sizes)
    elif graphs:
        runner = CUDAGraphRunner(model, backend, kv, dev, **sizes)
    else:
        runner = ModelRunner(model, backend, kv, dev, **sizes)
    # In Triton's interpreter (no GPU) a compiled forward would only add minutes of start-up around
    # kernels that run as NumPy: stage triton runs eagerly there.
    interpreted = c.attention == "triton" and not dev.startswith("cuda")
    if c.compile is not None and not interpreted:
        runner.decode_forward = compile_model(model, c.compile)  # decode steps; others stay eager
    if isinstance(runner, CUDAGraphRunner):
        runner.capture()  # at start-up: compiles (if asked) and records every decode graph
    return StageParts(kv, scheduler, runner)
