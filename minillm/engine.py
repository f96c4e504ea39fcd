"""The engine loop: Engine.step() = schedule -> prepare -> forward -> sample -> update.

A stage's parts (KV layout, attention backend, scheduler, runner) are built once, by build.py; step()
is the same for every stage. Requests enter through one intake path (intake.py) that validates a whole
call before queueing anything; sampled tokens leave through the output processor (output.py), which
detokenises, applies the stop rules and decides jump-forwards that the engine then carries out.
Beside it: overlap.py holds the host work that async_output and async_scheduling defer to the next
step, step_stats.py the record and phase timing of each step, logprobs.py the logprobs of chapter 9.

Checked by: pytest -m ch1, tests/test_lifecycle.py.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

import torch

from minillm.build import build_stage, check_max_model_len, default_max_model_len
from minillm.config import EngineConfig
from minillm.constrained.guide import GuideFactory
from minillm.intake import Intake
from minillm.logprobs import add_logprobs, add_prompt_logprobs, any_prompt_logprobs, prompt_logprob_rows
from minillm.model.loader import load_model
from minillm.output import OutputProcessor
from minillm.overlap import Overlap
from minillm.request import RequestOutput, SamplingParams, Sequence, SequenceStatus
from minillm.sampling import GuideMask, Sampler
from minillm.step_stats import STEP_PHASES, PhaseTimer, StepStats, measure_step
from minillm.tokenizer import find_tokenizer

__all__ = ["LOOP_OPTIONS", "STEP_PHASES", "Engine", "StepStats"]

# EngineConfig fields only step() reads: reconfigure() changes them without building the stage again
LOOP_OPTIONS = ("async_output", "async_scheduling")


class Engine:
    def __init__(
        self, model: str, config: EngineConfig, *, load_format: str = "auto", tokenizer: str | None = None
    ):
        self.model, self.model_config, model_dir = load_model(
            model, load_format=load_format, dtype=config.torch_dtype, device=config.device, seed=config.seed
        )
        self.tokenizer = find_tokenizer(tokenizer, model_dir)
        self._eos_token_ids = set(self.model_config.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self._eos_token_ids.add(self.tokenizer.eos_token_id)
        self.guides: GuideFactory | None = None  # compiled constraints, cached (chapter 5)
        self.guide_mask = GuideMask()
        self.sampler = Sampler(config.device, config.seed, logits_processors=[self.guide_mask])
        self.intake = Intake(self)
        self._next_id = 0
        self._seqs: dict[int, Sequence] = {}  # unfinished requests by id
        # one record per step (batch shape, KV memory, phase times) for plots; bounded: a server runs for days
        self.step_stats: deque[StepStats] = deque(maxlen=100_000)
        self.sync_timing = False  # benchmarks: wait for the device at each phase boundary, to split GPU time
        self._configure(config)

    def _configure(self, config: EngineConfig) -> None:
        max_model_len = config.max_model_len or default_max_model_len(
            config, self.model_config.max_position_embeddings
        )
        check_max_model_len(config, max_model_len, self.model_config)  # before anything changes
        parts = build_stage(config, self.model, self.model_config, max_model_len)
        self.config, self.max_model_len = config, max_model_len
        self.kv, self.scheduler, self.runner = parts.kv, parts.scheduler, parts.runner
        self.output = OutputProcessor(self.tokenizer, self._eos_token_ids, max_model_len)
        # async_output / async_scheduling: the host work a step leaves for the next one (overlap.py)
        self.overlap = Overlap(lambda: self.config, self.output, self._finish)
        strategy = config.constrained_decoding  # a guide factory, kept (with its guides) if unchanged
        if strategy is None or self.tokenizer is None:
            self.guides = None
        elif self.guides is None or self.guides.strategy != strategy:
            self.guides = GuideFactory(self.tokenizer, self.eos_token_ids, strategy)

    @property
    def eos_token_ids(self) -> set[int]:
        return self._eos_token_ids

    @eos_token_ids.setter
    def eos_token_ids(self, ids) -> None:  # the stop rule reads them (tests swap them)
        self._eos_token_ids = self.output.eos_token_ids = set(ids)

    def reconfigure(self, **overrides) -> None:
        """A new stage build (KV pool, backend, scheduler, runner) with some EngineConfig fields changed,
        keeping the loaded weights (benchmarks sweep memory budgets this way). Only between runs. When
        only LOOP_OPTIONS change, the build (and its compiled graphs) stays."""
        if self.has_unfinished():
            raise RuntimeError("reconfigure() with requests in flight")
        config = replace(self.config, **overrides)  # validated before anything changes
        self.overlap.clear()  # what aborted requests left: nobody reads it
        if overrides and set(overrides) <= set(LOOP_OPTIONS):  # none at all: a fresh build, as asked
            self.config = config
        else:
            self._configure(config)
        self.step_stats.clear()

    def kv_capacity_tokens(self) -> int:
        """Most tokens one sequence could ever hold in this engine's KV cache."""
        if self.kv is None or self.config.kv_cache == "contiguous":
            return self.max_model_len
        return (self.kv.num_blocks - self.kv.manager.watermark_blocks) * self.kv.block_size

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix (vLLM's reset_prefix_cache): benchmark variants that share a build
        start cold. False, and nothing forgotten, while requests are unfinished."""
        if self.has_unfinished():
            return False
        return self.kv is None or not hasattr(self.kv, "manager") or self.kv.manager.reset_prefix_cache()

    # -- requests ---------------------------------------------------------------------------------
    def add_requests(self, prompts: list, params: list[SamplingParams], arrival_time: float | None = None):
        """Validate every request, then queue them all; returns their ids. Nothing is queued on error."""
        seqs = self.intake.make_sequences(prompts, params, arrival_time)
        for seq in seqs:
            seq.request_id = self._next_id
            self._next_id += 1
            self._seqs[seq.request_id] = seq
            self.output.add(seq)
            self.scheduler.add(seq)
        return [s.request_id for s in seqs]

    def add_request(
        self, prompt, params: SamplingParams, arrival_time: float | None = None, prompt_token_ids=None
    ):
        """Validate and queue one request (text or token ids); returns its id."""
        return self.add_requests(
            [prompt if prompt_token_ids is None else prompt_token_ids], [params], arrival_time
        )[0]

    def abort_request(self, request_id: int) -> None:
        """Drop an unfinished request wherever it is (queued or running) and free its KV blocks now."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, "abort"
        self.scheduler.abort(seq)
        self.output.drop(seq)
        self.overlap.drop(seq)  # nobody reads its deferred text or its token in flight

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or self.overlap.has_unfinished()

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One forward over the scheduled batch; returns an output for every sequence that advanced
        (with async_output or async_scheduling, for every sequence that advanced in the step before:
        see overlap.py)."""
        timer = PhaseTimer(self.config.device if self.sync_timing else None)
        constraint_before = self.guide_mask.seconds + self.output.guide_s
        batch = self.scheduler.schedule()
        if batch is None:
            progressed = self.overlap.deferred()
            outputs = self.overlap.resolve() + self.overlap.drain()  # the last step's tokens and texts
            if not progressed and self.scheduler.has_unfinished():
                # admission checks make this unreachable; never spin silently
                raise RuntimeError("the scheduler could run nothing while requests are waiting")
            return outputs
        timer.lap("schedule")
        # a sequence samples when this step computes its last token (not after a mid-prompt chunk)
        sample = [
            i
            for i, (s, n) in enumerate(zip(batch.seqs, batch.num_new_tokens))
            if s.num_computed_tokens + n == s.num_tokens
        ]
        sampling = [batch.seqs[i] for i in sample]
        inputs = self.runner.prepare(batch, sample)
        timer.lap("prepare")
        prompt_rows = prompt_logprob_rows(batch) if any_prompt_logprobs(batch.seqs) else None
        if not prompt_rows:
            logits = self.runner.forward(*inputs)
        else:  # chapter 9: someone asked for prompt logprobs, so logits at their prompt positions too
            index = torch.tensor([i for i, _, _ in prompt_rows], device=self.config.device)
            logits, prompt_logits = self.runner.forward_prompt_logits(*inputs, index)
            add_prompt_logprobs(prompt_rows, prompt_logits)
        timer.lap("forward")
        if self.overlap.wait_for_tokens():  # the step before's tokens; the device goes on
            timer.lap("sample")  # waiting for the device, as in a synchronous step
        deferred = self.overlap.deferred()
        # async_output / async_scheduling: the step before's host work, while the device computes this one
        outputs = self.overlap.resolve() + self.overlap.drain()
        if deferred:
            timer.lap("output")
        if deferred and any(s.is_finished for s in sampling):
            # ended by the step before's tokens: this step's row was computed for nothing. Not sampled
            # either, so that unseeded requests draw from the shared generator as without deferral
            keep = [i for i, s in enumerate(sampling) if not s.is_finished]
            sampling, logits = [sampling[i] for i in keep], logits[keep]
        ahead = self.config.async_scheduling and bool(sampling) and not prompt_rows
        ahead = ahead and all(self.overlap.defer(s) for s in sampling)
        if ahead:  # the tokens stay on the device: the next step reads them there, the host after it
            tokens = self.overlap.sample_ahead(logits, sampling, self.sampler, self.runner)
        else:
            tokens = self.sampler(logits, sampling) if sampling else []
            if any(s.logprobs is not None for s in sampling):
                add_logprobs(logits, sampling, tokens)
        timer.lap("sample")
        now = time.perf_counter()
        # a sequence that a stop string ended in the drain above was computed in this step for nothing:
        # its token is dropped, and its blocks are already free
        live = [i for i, s in enumerate(batch.seqs) if not s.is_finished] if deferred else ()
        if deferred and len(live) < len(batch.seqs):
            batch = replace(
                batch,
                seqs=[batch.seqs[i] for i in live],
                num_new_tokens=[batch.num_new_tokens[i] for i in live],
            )
        self.scheduler.update(batch)
        for seq in batch.seqs:
            seq.num_steps += 1
        # KV use as this step computed it, before anyone finishes
        stats = measure_step(batch, self.scheduler, self.kv, now)
        self.step_stats.append(stats)
        if ahead:
            self.overlap.reserve(sampling, tokens, now)
            tokens = []
        for seq, tok in zip(sampling, tokens):
            if seq.is_finished:
                continue
            if self.overlap.defer(seq):
                self.overlap.record_token(seq, tok, now)
            else:
                out = self._process(seq, tok, now)
                if out is not None:  # None: a final_only request that goes on
                    outputs.append(out)
        timer.lap("update")
        stats.phase_s = timer.phases
        stats.constraint_s = self.guide_mask.seconds + self.output.guide_s - constraint_before
        return outputs

    def _process(self, seq: Sequence, token: int, now: float) -> RequestOutput | None:
        reason = self.output.append_token(seq, token, now)
        if reason is not None:
            self._finish(seq, reason)
        elif seq.guide is not None:
            jump = self.output.jump_forward(seq)
            if jump is not None:  # blocks go back (to the prefix cache) under the old tokens first
                if jump.done:
                    self._finish(seq, "stop")
                else:
                    self.scheduler.requeue(seq)  # re-prefilled in one pass; its prefix is a cache hit
                self.output.apply_jump(seq, jump, now)
        return self.output.emit(seq)

    def _finish(self, seq: Sequence, reason: str) -> None:
        preempted = seq.status == SequenceStatus.WAITING  # async_output: requeued before its text was done
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self._seqs.pop(seq.request_id, None)
        if preempted:
            self.scheduler.abort(seq)  # out of the waiting queue; it holds no blocks
        else:
            self.scheduler.finish(seq)
