"""The engine loop: Engine.step() = schedule -> prepare -> forward -> sample -> update.

A stage's parts (KV layout, attention backend, scheduler, runner) are built once, by build.py; step()
is the same for every stage. Requests enter through one intake path (intake.py) that validates a whole
call before queueing anything; sampled tokens leave through the output processor (output.py), which
detokenises, applies the stop rules and decides jump-forwards that the engine then carries out.

Checked by: pytest -m ch1, tests/test_lifecycle.py.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from minillm.build import build_stage, check_max_model_len, default_max_model_len
from minillm.config import DEFAULT_MODEL, EngineConfig
from minillm.constrained.guide import GuideFactory
from minillm.intake import Intake
from minillm.model.loader import load_model
from minillm.output import OutputProcessor
from minillm.request import RequestOutput, SamplingParams, Sequence, SequenceStatus
from minillm.sampling import GuideMask, Sampler, token_logprobs
from minillm.tokenizer import Tokenizer

# "output": with async_output, the previous step's texts, done while the device computes this step
STEP_PHASES = ("schedule", "prepare", "forward", "output", "sample", "update")
# EngineConfig fields only step() reads: reconfigure() changes them without building the stage again
LOOP_OPTIONS = ("async_output", "async_scheduling")


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
    phase_s: dict[str, float] = field(default_factory=dict)  # seconds in each of STEP_PHASES


class Engine:
    def __init__(
        self, model: str, config: EngineConfig, *, load_format: str = "auto", tokenizer: str | None = None
    ):
        self.model, self.model_config, model_dir = load_model(
            model, load_format=load_format, dtype=config.torch_dtype, device=config.device, seed=config.seed
        )
        self.tokenizer = _find_tokenizer(tokenizer, model_dir)
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
        # async_output: (sequence, token, finish reason so far, token in text) whose text is still to do
        self._pending: list[tuple[Sequence, int, str | None, bool]] = []
        # async_scheduling: the step before's tokens, still on their way to the host (see _sample_ahead)
        self._inflight: _InFlight | None = None
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
        # two host buffers for sampled tokens, used in turn: a step's copy lands in one while the host
        # reads the step before's from the other (pinned memory, so the copy does not wait for the host)
        pin = config.device.startswith("cuda")
        self._token_host = [
            torch.empty(config.max_num_seqs, dtype=torch.int64, pin_memory=pin) for _ in range(2)
        ]
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
        self._pending, self._inflight = [], None  # what aborted requests left: nobody reads it
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
        # nobody reads its deferred text or its token in flight
        self._pending = [p for p in self._pending if p[0] is not seq]
        if self._inflight is not None:
            self._inflight.entries = [e for e in self._inflight.entries if e[0] is not seq]

    def has_unfinished(self) -> bool:
        inflight = self._inflight is not None and bool(self._inflight.entries)
        return self.scheduler.has_unfinished() or bool(self._pending) or inflight

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One forward over the scheduled batch; returns an output for every sequence that advanced
        (with async_output or async_scheduling, for every sequence that advanced in the step before:
        see _defer and _sample_ahead)."""
        timer = _PhaseTimer(self.config.device if self.sync_timing else None)
        constraint_before = self.guide_mask.seconds + self.output.guide_s
        batch = self.scheduler.schedule()
        if batch is None:
            progressed = self._inflight is not None or bool(self._pending)
            outputs = self._resolve() + self._drain()  # the last step's tokens and texts
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
        prompt_rows = self._prompt_logprob_rows(batch) if _any_prompt_logprobs(batch.seqs) else None
        if not prompt_rows:
            logits = self.runner.forward(*inputs)
        else:  # chapter 9: someone asked for prompt logprobs, so logits at their prompt positions too
            index = torch.tensor([i for i, _, _ in prompt_rows], device=self.config.device)
            logits, prompt_logits = self.runner.forward_prompt_logits(*inputs, index)
            self._add_prompt_logprobs(prompt_rows, prompt_logits)
        timer.lap("forward")
        if self._inflight is not None and self._inflight.tokens.event is not None:
            self._inflight.tokens.event.synchronize()  # the step before's tokens; the device goes on
            timer.lap("sample")  # waiting for the device, as in a synchronous step
        deferred = bool(self._pending) or self._inflight is not None
        # async_output / async_scheduling: the step before's host work, while the device computes this one
        outputs = self._resolve() + self._drain()
        if deferred:
            timer.lap("output")
        if deferred and any(s.is_finished for s in sampling):
            # ended by the step before's tokens: this step's row was computed for nothing. Not sampled
            # either, so that unseeded requests draw from the shared generator as without deferral
            keep = [i for i, s in enumerate(sampling) if not s.is_finished]
            sampling, logits = [sampling[i] for i in keep], logits[keep]
        ahead = self.config.async_scheduling and bool(sampling) and not prompt_rows
        ahead = ahead and all(self._defer(s) for s in sampling)
        if ahead:  # the tokens stay on the device: the next step reads them there, the host after it
            tokens = self._sample_ahead(logits, sampling)
        else:
            tokens = self.sampler(logits, sampling) if sampling else []
            if any(s.logprobs is not None for s in sampling):
                self._add_logprobs(logits, sampling, tokens)
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
        stats = self._record(batch, now)  # KV use as this step computed it, before anyone finishes
        if ahead:
            self._reserve(sampling, tokens, now)
            tokens = []
        for seq, tok in zip(sampling, tokens):
            if seq.is_finished:
                continue
            if self._defer(seq):
                self._record_token(seq, tok, now)
            else:
                outputs.append(self._process(seq, tok, now))
        timer.lap("update")
        stats.phase_s = timer.phases
        stats.constraint_s = self.guide_mask.seconds + self.output.guide_s - constraint_before
        return outputs

    # -- asynchronous output processing (vLLM's; EngineConfig.async_output) -----------------------
    def _defer(self, seq: Sequence) -> bool:
        """Whether this token's text waits for the next step. Not for a constrained request (its guide
        and jump-forward need the text before its next token) nor one that asked for logprobs."""
        deferring = self.config.async_output or self.config.async_scheduling
        return deferring and seq.guide is None and seq.logprobs is None

    def _record_token(self, seq: Sequence, token: int, now: float) -> None:
        """Now: the token, and the rules that read ids and counts (EOS, stop tokens, max_tokens), so the
        next schedule knows who continues. Later (_drain): its text and the stop strings."""
        reason, in_text = self.output.record_token(seq, token, now)
        if reason is not None:
            self._finish(seq, reason)  # its blocks go back before the next schedule
        self._pending.append((seq, token, reason, in_text))

    def _drain(self) -> list[RequestOutput]:
        """The deferred texts of the last step, in order. A stop string found here ends a request that
        may already be in the step being computed; step() then drops that step's token for it."""
        pending, self._pending = self._pending, []
        return [
            self._add_text(seq, token, reason, in_text)
            for seq, token, reason, in_text in pending
            if seq.finish_reason != "abort"  # aborted between steps: nobody reads its text
        ]

    def _add_text(self, seq: Sequence, token: int, reason: str | None, in_text: bool) -> RequestOutput:
        final = self.output.add_text(seq, token, reason, in_text)
        if final is not None and not seq.is_finished:
            self._finish(seq, final)
        elif final is not None:
            seq.finish_reason = final  # a stop token or string on the token that reached max_tokens: "stop"
        return self.output.emit(seq)

    # -- asynchronous scheduling (vLLM's async scheduling, SGLang's overlap scheduler) -------------
    def _sample_ahead(self, logits: torch.Tensor, sampling: list[Sequence]) -> _Tokens:
        """Sample without waiting: the tokens go to the runner's `sampled` buffer, where the next step's
        input ids read them on the device, and start their copy to the host, read by _resolve."""
        tokens = self.sampler.sample(logits, sampling)  # (S,) on the device
        self.runner.sampled[: len(sampling)].copy_(tokens)
        host = self._token_host[0][: len(sampling)]
        self._token_host.reverse()  # the next step's copy goes to the other buffer
        host.copy_(tokens, non_blocking=True)
        event = None
        if self.config.device.startswith("cuda"):
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(tokens.device))
        return _Tokens(host, event)

    def _reserve(self, sampling: list[Sequence], tokens: _Tokens, now: float) -> None:
        """Each live sequence gets a placeholder for its token, -(1 + its row), and the rules that read
        only counts (max_tokens, the model length) end requests now, so the next schedule leaves them
        out. The ids, their text and the rules that read them come with _resolve."""
        entries = []
        for row, seq in enumerate(sampling):  # none finished: step() left those out
            reason = self.output.reserve_token(seq, -1 - row, now)
            entries.append((seq, row, len(seq.output_token_ids) - 1))
            if reason is not None:
                self._finish(seq, reason)  # its blocks go back; the last token's K/V is never needed
        self._inflight = _InFlight(entries, tokens)

    def _resolve(self) -> list[RequestOutput]:
        """The step before's tokens, now on the host: fill the placeholders, apply every stop rule
        (EOS, stop tokens, stop strings), detokenize. A request ended here may be in the step being
        computed; step() then drops that step's token for it."""
        if self._inflight is None:
            return []
        inflight, self._inflight = self._inflight, None
        if inflight.tokens.event is not None:
            inflight.tokens.event.synchronize()
        ids = inflight.tokens.host.tolist()
        now = time.perf_counter()
        outputs = []
        for seq, row, index in inflight.entries:
            if seq.finish_reason == "abort":
                continue
            reason, in_text = self.output.record_token(seq, ids[row], now, index=index)
            outputs.append(self._add_text(seq, ids[row], reason, in_text))
        return outputs

    def _process(self, seq: Sequence, token: int, now: float) -> RequestOutput:
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

    # -- logprobs (chapter 9) ---------------------------------------------------------------------
    def _prompt_logprob_rows(self, batch) -> list[tuple[int, Sequence, int]]:
        """(flat index in this step's tokens, sequence, the prompt token that follows) for every
        position whose logits give a prompt logprob still missing: each position once, in order (a
        recompute after preemption adds nothing twice). Position P - 1 predicts an output token."""
        rows, offset = [], 0
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            if seq.prompt_logprobs is not None:
                start = seq.num_computed_tokens
                for q in range(
                    max(start, len(seq.prompt_logprobs) - 1), min(start + n, seq.num_prompt_tokens - 1)
                ):
                    rows.append((offset + q - start, seq, seq.prompt_token_ids[q + 1]))
            offset += n
        return rows

    def _add_prompt_logprobs(self, rows, prompt_logits: torch.Tensor) -> None:
        entries = token_logprobs(
            prompt_logits, [t for _, _, t in rows], [s.params.prompt_logprobs for _, s, _ in rows]
        )
        for (_, seq, _), entry in zip(rows, entries):
            seq.prompt_logprobs.append(entry)

    def _add_logprobs(self, logits: torch.Tensor, sampling: list[Sequence], tokens: list[int]) -> None:
        rows = [i for i, s in enumerate(sampling) if s.logprobs is not None]
        entries = token_logprobs(
            logits[rows], [tokens[i] for i in rows], [sampling[i].params.logprobs for i in rows]
        )  # logits (len(rows), V): raw, as the model gave them
        for i, entry in zip(rows, entries):
            sampling[i].logprobs.append(entry)

    def _record(self, batch, now: float) -> StepStats:
        holding = self.scheduler.seqs_holding_kv()
        used, reserved, total = self.kv.usage(holding) if self.kv is not None else (0, 0, 0)
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

    def _finish(self, seq: Sequence, reason: str) -> None:
        preempted = seq.status == SequenceStatus.WAITING  # async_output: requeued before its text was done
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self._seqs.pop(seq.request_id, None)
        if preempted:
            self.scheduler.abort(seq)  # out of the waiting queue; it holds no blocks
        else:
            self.scheduler.finish(seq)


@dataclass
class _Tokens:
    host: torch.Tensor  # (S,) int64, filled by a copy that may still be running
    event: torch.cuda.Event | None  # recorded after that copy (CUDA only)


@dataclass
class _InFlight:
    entries: list[tuple[Sequence, int, int]]  # (sequence, row in the sampled tokens, output position)
    tokens: _Tokens


class _PhaseTimer:
    """Seconds between laps; with a CUDA device, each lap first waits for the GPU (benchmarks only)."""

    def __init__(self, sync_device: str | None):
        self.sync = sync_device is not None and sync_device.startswith("cuda")
        self.phases: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


def _any_prompt_logprobs(seqs: list[Sequence]) -> bool:
    return any(s.prompt_logprobs is not None for s in seqs)


def _find_tokenizer(tokenizer: str | None, model_dir: Path | None) -> Tokenizer | None:
    """An explicit tokenizer folder, else the checkpoint's own, else the default model's (named
    dummy configs have none of their own; their vocabularies are larger, so its ids are valid)."""
    if tokenizer is not None:
        return Tokenizer(tokenizer)
    if model_dir is not None and (model_dir / "tokenizer.json").is_file():
        return Tokenizer(model_dir)
    if model_dir is None and (Path(DEFAULT_MODEL) / "tokenizer.json").is_file():
        return Tokenizer(DEFAULT_MODEL)
    return None
