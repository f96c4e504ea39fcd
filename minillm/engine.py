"""The engine loop: Engine.step() = schedule -> run the model -> sample -> update.

Stage-specific parts are chosen once, at construction (KV layout, attention backend, scheduler);
step() is the same for every stage. Requests are validated at add_request, so bad input fails with a
ValueError naming the field before anything is allocated.

Checked by: pytest -m ch1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from minillm.attention.sdpa import NoCacheAttention
from minillm.config import EngineConfig
from minillm.constrained.guide import GuideFactory, mask_logits
from minillm.constrained.regex import RegexError
from minillm.kv.contiguous import ContiguousAttention, ContiguousKVCache
from minillm.kv.paged import BlockManager, PagedAttention, PagedKVCache
from minillm.kv.prefix_hash import PrefixCachingBlockManager
from minillm.kv.radix import RadixBlockManager
from minillm.model.loader import load_model
from minillm.request import RequestOutput, SamplingParams, Sequence, SequenceStatus
from minillm.runner import ModelRunner
from minillm.sampling import Sampler
from minillm.scheduler.continuous import ContinuousScheduler
from minillm.scheduler.static import StaticScheduler
from minillm.scheduler.unified import UnifiedScheduler
from minillm.tokenizer import IncrementalDetokenizer, Tokenizer


@dataclass
class StepStats:
    time: float
    num_seqs: int  # sequences in this step's batch
    num_tokens: int  # tokens fed this step
    num_waiting: int
    num_holding_kv: int  # sequences that own KV memory (static batching: finished members too)
    kv_used: int  # KV slots holding a token's K/V
    kv_reserved: int  # KV slots allocated to sequences (used + waste inside their rows/blocks)
    kv_total: int  # KV slots in the pool
    constraint_s: float = 0.0  # host time spent on constrained decoding: masks, guide states, jumps


class Engine:
    def __init__(
        self, model: str, config: EngineConfig, *, load_format: str = "auto", tokenizer: str | None = None
    ):
        self.config = config
        self.model, self.model_config, model_dir = load_model(
            model, load_format=load_format, dtype=config.torch_dtype, device=config.device, seed=config.seed
        )
        self.tokenizer = _find_tokenizer(tokenizer, model_dir)
        mc = self.model_config
        self.max_model_len = config.max_model_len or _default_max_model_len(
            config, mc.max_position_embeddings
        )
        self._check_max_model_len(config)
        self.eos_token_ids = set(mc.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(self.tokenizer.eos_token_id)
        self.kv, backend, self.scheduler = self._build_kv_and_scheduler()
        self.runner = ModelRunner(self.model, backend, self.kv, config.device)
        self.sampler = Sampler(config.device, config.seed)
        self._next_id = 0
        self.step_stats: list[StepStats] = []  # one per step: batch shape and KV memory, for plots
        self._detok: dict[int, IncrementalDetokenizer] = {}
        self.guides: GuideFactory | None = None  # compiled constraints, cached (chapter 5)
        self._set_guides(config)

    def _check_max_model_len(self, c: EngineConfig) -> None:
        mc = self.model_config
        if self.max_model_len > mc.max_position_embeddings:
            raise ValueError(
                f"max_model_len={self.max_model_len} exceeds the model's max_position_embeddings="
                f"{mc.max_position_embeddings}"
            )
        if self.max_model_len > c.max_num_batched_tokens and not c.chunked_prefill:
            raise ValueError(
                f"max_model_len={self.max_model_len} exceeds max_num_batched_tokens={c.max_num_batched_tokens}:"
                " without chunked prefill a whole sequence must fit in one step"
            )

    def _build_kv_and_scheduler(self):
        """The stage-specific parts: KV layout, the attention backend that reads it, the scheduler."""
        c, mc = self.config, self.model_config
        layers, nkv, hd, dtype, dev = mc.num_layers, mc.num_kv_heads, mc.head_dim, c.torch_dtype, c.device
        if c.kv_cache == "none":
            kv, backend = None, NoCacheAttention()
        elif c.kv_cache == "contiguous":
            rows = min(c.max_num_seqs, c.kv_cache_tokens // self.max_model_len)
            kv = ContiguousKVCache(layers, rows, self.max_model_len, nkv, hd, dtype, dev)
            backend = ContiguousAttention(kv)
        else:
            manager = {None: BlockManager, "hash": PrefixCachingBlockManager, "radix": RadixBlockManager}[
                c.prefix_cache
            ]
            kv = PagedKVCache(
                layers, self._num_blocks(), c.block_size, nkv, hd, dtype, dev, manager_cls=manager
            )
            backend = PagedAttention(kv)
        if c.scheduler == "static":
            scheduler = StaticScheduler(c.max_num_seqs, c.max_num_batched_tokens, kv)
        elif c.scheduler == "continuous":
            scheduler = ContinuousScheduler(c.max_num_seqs, c.max_num_batched_tokens, kv, c.schedule_policy)
        else:
            scheduler = UnifiedScheduler(
                c.max_num_seqs,
                c.max_num_batched_tokens,
                kv,
                c.schedule_policy,
                c.long_prefill_token_threshold,
            )
        return kv, backend, scheduler

    def reconfigure(self, **overrides) -> None:
        """New KV pool, backend and scheduler with some EngineConfig fields changed, keeping the loaded
        weights (benchmarks sweep memory budgets this way). Only between runs: nothing may be queued."""
        if self.has_unfinished():
            raise RuntimeError("reconfigure() with requests in flight")
        config = replace(self.config, **overrides)
        self._check_max_model_len(config)  # before anything changes: a bad override leaves it as it was
        self.config = config
        self.kv, backend, self.scheduler = self._build_kv_and_scheduler()
        self._set_guides(config)
        self.runner.attn_backend, self.runner.kv = backend, self.kv
        self.step_stats.clear()

    def _set_guides(self, config: EngineConfig) -> None:
        """A guide factory for the config's strategy; kept (with its compiled guides) if unchanged."""
        strategy = config.constrained_decoding
        if strategy is None or self.tokenizer is None:
            self.guides = None
        elif self.guides is None or self.guides.strategy != strategy:
            self.guides = GuideFactory(self.tokenizer, self.eos_token_ids, strategy)

    def _num_blocks(self) -> int:
        """From kv_cache_tokens, or on a GPU from gpu_memory_utilization of the memory left after the weights."""
        c, mc = self.config, self.model_config
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

    def kv_capacity_tokens(self) -> int:
        """Most tokens one sequence could ever hold in this engine's KV cache."""
        if self.kv is None:
            return self.max_model_len
        if self.config.kv_cache == "contiguous":
            return self.max_model_len
        return (self.kv.num_blocks - self.kv.manager.watermark_blocks) * self.kv.block_size

    # -- requests ---------------------------------------------------------------------------------
    def check_params(self, params) -> None:
        if not isinstance(params, SamplingParams):
            raise ValueError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
        if params.constrained and self.config.constrained_decoding is None:
            raise ValueError(
                "SamplingParams.regex/json_schema/choice need constrained decoding: stage 'fsm', or "
                "constrained_decoding='naive' | 'indexed' | 'compressed'"
            )
        if params.constrained and self.guides is None:
            raise ValueError("SamplingParams.regex/json_schema/choice: this model has no tokenizer")

    def compile_guide(self, params: SamplingParams):
        """The request's constraint as a guide (cached); a bad pattern or schema is a ValueError naming
        the field."""
        field = next(n for n in ("regex", "json_schema", "choice") if getattr(params, n) is not None)
        try:
            return self.guides.guide_for(params)
        except (RegexError, ValueError) as e:
            raise ValueError(f"SamplingParams.{field}: {e}") from e

    def encode_prompt(self, index: int, prompt: str | list[int]) -> list[int]:
        """Tokenize (text) or copy (token ids) one prompt and validate it; index names it in errors."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("prompt: this model has no tokenizer; pass prompt_token_ids instead")
            ids = self.tokenizer.encode(prompt)
        else:
            ids = list(prompt)
        self._validate_prompt(index, ids)
        return ids

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
        prompt_token_ids: list[int] | None = None,
    ) -> int:
        """Validate and queue one request; returns its id. prompt: text or token ids; pass
        prompt_token_ids too when the text is already tokenized (and validated)."""
        self.check_params(params)
        rid = self._next_id
        ids = prompt_token_ids if prompt_token_ids is not None else self.encode_prompt(rid, prompt)
        self.check_fits(rid, ids, params)
        guide = self.compile_guide(params) if params.constrained else None
        seq = Sequence(rid, ids, params, prompt=prompt if isinstance(prompt, str) else None)
        if guide is not None:
            seq.guide, seq.guide_state = guide, guide.initial_state
        if arrival_time is not None:
            seq.arrival_time = arrival_time
        if params.seed is not None:
            seq.generator = torch.Generator(device=self.config.device).manual_seed(params.seed)
        if self.tokenizer is not None:
            self._detok[rid] = IncrementalDetokenizer(self.tokenizer, ids)
        self._next_id += 1
        self.scheduler.add(seq)
        return rid

    def check_fits(self, index: int, ids: list[int], params: SamplingParams) -> None:
        """A request whose prompt + max_tokens can never fit the KV pool would wait forever: reject it."""
        need = min(len(ids) + params.max_tokens, self.max_model_len)
        capacity = self.kv_capacity_tokens()
        if need > capacity:
            raise ValueError(
                f"prompt {index}: prompt + max_tokens = {need} tokens can never fit the KV pool of {capacity} "
                "tokens (raise kv_cache_tokens or lower max_tokens)"
            )

    def _validate_prompt(self, rid: int, ids: list[int]) -> None:
        if len(ids) == 0:
            raise ValueError(f"prompt {rid}: the prompt is empty")
        vocab = self.model_config.vocab_size
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt_token_ids {rid}: id {bad[0]!r} is outside the vocabulary [0, {vocab})")
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt {rid}: {len(ids)} tokens leave no room to generate within max_model_len={self.max_model_len}"
            )
        if len(ids) > self.config.max_num_batched_tokens and not self.config.chunked_prefill:
            raise ValueError(
                f"prompt {rid}: {len(ids)} tokens exceed max_num_batched_tokens={self.config.max_num_batched_tokens}"
                " (prompts are not split in this stage)"
            )

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One forward over the scheduled batch; returns an output for every sequence that advanced."""
        batch = self.scheduler.schedule()
        if batch is None:
            if self.has_unfinished():  # admission checks make this unreachable; never spin silently
                raise RuntimeError("the scheduler could run nothing while requests are waiting")
            return []
        # a sequence samples when this step computes its last token (not after a mid-prompt chunk)
        sample = [
            i
            for i, (s, n) in enumerate(zip(batch.seqs, batch.num_new_tokens))
            if s.num_computed_tokens + n == s.num_tokens
        ]
        sampling = [batch.seqs[i] for i in sample]
        logits = self.runner.execute(batch, sample)
        t0 = time.perf_counter()
        if any(s.guide is not None for s in sampling):
            logits = mask_logits(logits, [(s.guide, s.guide_state) if s.guide else None for s in sampling])
        constraint_s = time.perf_counter() - t0
        tokens = self.sampler(logits, sampling) if sampling else []
        now = time.perf_counter()
        self.scheduler.update(batch)
        for seq in batch.seqs:
            seq.num_steps += 1
        stats = self._record(batch, now)  # KV use as this step computed it, before anyone finishes
        outputs = []
        for seq, tok in zip(sampling, tokens):
            t0 = time.perf_counter()
            self._advance_guide(seq, tok)
            constraint_s += time.perf_counter() - t0
            self._append_token(seq, tok, now)
            if seq.guide is not None and not seq.is_finished:
                t0 = time.perf_counter()
                self._jump_forward(seq, now)
                constraint_s += time.perf_counter() - t0
            outputs.append(self._emit(seq))
        stats.constraint_s = constraint_s
        return outputs

    def _advance_guide(self, seq: Sequence, token: int) -> None:
        if seq.guide is None or token in self.eos_token_ids:
            return
        state = seq.guide.next_state(seq.guide_state, token)
        if state is None:  # the mask makes this unreachable
            raise RuntimeError(f"request {seq.request_id}: token {token} violates its constraint")
        seq.guide_state = state

    def _jump_forward(self, seq: Sequence, now: float) -> None:
        """Compressed FSM: append the forced text at once and re-prefill it in one pass (SGLang).
        The sequence gives its blocks back (the prefix cache keeps them) before its tail tokens change,
        so its unchanged prefix is a cache hit when it is scheduled again."""
        jump = seq.guide.jump_forward(seq.output_token_ids, seq.guide_state)
        if jump is None:
            return
        p, ids = seq.params, jump.output_ids
        done = seq.guide.is_terminal(jump.state)
        # a length limit, a stop token or a stop string inside the forced text: decode it the usual way,
        # so that the usual checks end the request where they would have
        room = min(p.max_tokens, self.max_model_len - seq.num_prompt_tokens)
        if len(ids) > room or (len(ids) == room and not done):
            return
        if any(t in p.stop_token_ids for t in ids[jump.num_kept :]):
            return
        text = self.tokenizer.decode(ids)
        start = len(seq.output_text)
        if any(stop in text[max(0, start - len(stop) + 1) :] for stop in p.stop):
            return
        # Blocks go back (to the prefix cache) under the old tokens, which is what they hold.
        if done:  # the forced text completes the match: nothing to compute
            self._finish(seq, "stop")
        else:
            self.scheduler.requeue(seq)
        added = len(ids) - len(seq.output_token_ids)
        seq.output_token_ids = ids
        seq.token_times = seq.token_times[: jump.num_kept] + [now] * (len(ids) - jump.num_kept)
        seq.guide_state = jump.state
        seq.num_forced_tokens += added
        seq.output_text = text
        if done:
            self._detok.pop(seq.request_id, None)
        else:
            self._detok[seq.request_id] = IncrementalDetokenizer(self.tokenizer, seq.token_ids)

    def _record(self, batch, now: float) -> StepStats:
        used = reserved = total = 0
        holding = self.scheduler.seqs_holding_kv()
        if self.kv is not None:
            used, reserved, total = self.kv.usage(holding)
        stats = StepStats(
            now,
            len(batch.seqs),
            batch.num_tokens,
            len(self.scheduler.waiting),
            len(holding),
            used,
            reserved,
            total,
        )
        self.step_stats.append(stats)
        return stats

    def _append_token(self, seq: Sequence, token: int, now: float) -> None:
        """Append a sampled token, detokenize, and check the stop conditions (vLLM's order)."""
        p = seq.params
        seq.output_token_ids.append(token)
        seq.token_times.append(now)
        detok = self._detok.get(seq.request_id)
        eos = token in self.eos_token_ids and (not p.ignore_eos or seq.guide is not None)
        if eos or token in p.stop_token_ids:
            self._finish(seq, "stop")  # the stop token stays in token_ids, out of the text
        else:
            new_text = detok.step(token) if detok is not None else ""
            start = max(0, len(seq.output_text) - p.longest_stop + 1)
            seq.output_text += new_text
            hits = [i for i in (seq.output_text.find(s, start) for s in p.stop) if i >= 0]
            if hits:
                seq.output_text = seq.output_text[: min(hits)]  # the text ends before the stop string
                self._finish(seq, "stop")
                detok = None  # what followed the stop string is dropped, not flushed
            elif seq.guide is not None and seq.guide.is_terminal(seq.guide_state):
                self._finish(seq, "stop")  # the constraint is complete: nothing but EOS could follow
            elif len(seq.output_token_ids) >= p.max_tokens or seq.num_tokens >= self.max_model_len:
                self._finish(seq, "length")
        if seq.is_finished:
            if detok is not None:
                seq.output_text += detok.flush()
            self._detok.pop(seq.request_id, None)

    def _emit(self, seq: Sequence) -> RequestOutput:
        """The request's output with the text that is new since the last one."""
        if seq.is_finished:
            visible = len(seq.output_text)
        else:  # hold back what could still turn out to be the start of a stop string
            visible = len(seq.output_text) - max(0, seq.params.longest_stop - 1)
        delta = seq.output_text[seq.num_emitted_chars : visible] if visible > seq.num_emitted_chars else ""
        seq.num_emitted_chars = max(seq.num_emitted_chars, visible)
        return seq.to_output(delta)

    def _finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.scheduler.finish(seq)


def _default_max_model_len(config: EngineConfig, max_position_embeddings: int) -> int:
    if config.chunked_prefill:  # a long prompt spreads over several steps
        return min(max_position_embeddings, config.kv_cache_tokens)
    return min(max_position_embeddings, config.kv_cache_tokens, config.max_num_batched_tokens)


def _find_tokenizer(tokenizer: str | None, model_dir: Path | None) -> Tokenizer | None:
    """An explicit tokenizer folder, else the checkpoint's own, else the default model's (named
    dummy configs have none of their own; their vocabularies are larger, so its ids are valid)."""
    if tokenizer is not None:
        return Tokenizer(tokenizer)
    if model_dir is not None and (model_dir / "tokenizer.json").is_file():
        return Tokenizer(model_dir)
    if model_dir is None:
        from minillm import DEFAULT_MODEL

        if (Path(DEFAULT_MODEL) / "tokenizer.json").is_file():
            return Tokenizer(DEFAULT_MODEL)
    return None
