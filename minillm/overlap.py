"""Deferred host work: what async_output and async_scheduling leave for the next step to do.

A synchronous step launches the forward, waits for the sampled tokens, and only then does the host's
work on them (stop rules, detokenizing, outputs) while the device idles. Two EngineConfig options move
that work behind the next step's forward; Overlap holds it between the two steps:

- async_output, vLLM's asynchronous output processing: a token and the rules that read ids and counts
  are recorded at once, so the next schedule knows who continues; its text and the stop strings wait
  for the next step (defer, record_token, drain).
- async_scheduling, vLLM's async scheduling (its AsyncScheduler) and SGLang's overlap scheduler: the
  sampled tokens stay on the device, where the next step's input ids read them, and reach the host
  while that step computes. Until then each sequence holds a placeholder, a negative id, as in SGLang's
  future token map (sample_ahead, reserve, resolve).

Engine.step() calls these in the order a step needs them; the mechanism is described in
docs/design.md ("The host and the device take turns").

Checked by: tests/test_async_output.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minillm.config import EngineConfig
from minillm.output import OutputProcessor
from minillm.request import RequestOutput, Sequence


@dataclass
class _Tokens:
    host: torch.Tensor  # (S,) int64, filled by a copy that may still be running
    event: torch.cuda.Event | None  # recorded after that copy (CUDA only)


@dataclass
class _InFlight:
    entries: list[tuple[Sequence, int, int]]  # (sequence, row in the sampled tokens, output position)
    tokens: _Tokens


class Overlap:
    """The step before's host work, done during this step's forward. `finish(seq, reason)` is the
    engine's: it ends a request and gives its blocks back."""

    def __init__(
        self,
        config: Callable[[], EngineConfig],
        output: OutputProcessor,
        finish: Callable[[Sequence, str], None],
    ):
        """config: the engine's current EngineConfig, read at each use (reconfigure may change the loop
        options without building anything again)."""
        self._config, self.output, self._finish = config, output, finish
        # async_output: (sequence, token, finish reason so far, token in text) whose text is still to do
        self._pending: list[tuple[Sequence, int, str | None, bool]] = []
        # async_scheduling: the step before's tokens, still on their way to the host (see sample_ahead)
        self._inflight: _InFlight | None = None
        # two host buffers for sampled tokens, used in turn: a step's copy lands in one while the host
        # reads the step before's from the other (pinned memory, so the copy does not wait for the host)
        pin = config().device.startswith("cuda")
        self._token_host = [
            torch.empty(config().max_num_seqs, dtype=torch.int64, pin_memory=pin) for _ in range(2)
        ]

    def deferred(self) -> bool:
        """Whether the step before left work here (texts to do, or tokens on their way)."""
        return bool(self._pending) or self._inflight is not None

    def has_unfinished(self) -> bool:
        inflight = self._inflight is not None and bool(self._inflight.entries)
        return bool(self._pending) or inflight

    def drop(self, seq: Sequence) -> None:
        """An aborted request: nobody reads its deferred text or its token in flight."""
        self._pending = [p for p in self._pending if p[0] is not seq]
        if self._inflight is not None:
            self._inflight.entries = [e for e in self._inflight.entries if e[0] is not seq]

    def clear(self) -> None:
        self._pending, self._inflight = [], None

    def wait_for_tokens(self) -> bool:
        """Wait for the step before's tokens to reach the host (CUDA: its event; the device goes on
        with this step). Whether there was a copy to wait for."""
        if self._inflight is None or self._inflight.tokens.event is None:
            return False
        self._inflight.tokens.event.synchronize()
        return True

    # -- asynchronous output processing (vLLM's; EngineConfig.async_output) -----------------------
    def defer(self, seq: Sequence) -> bool:
        """Whether this token's text waits for the next step. Not for a constrained request (its guide
        and jump-forward need the text before its next token) nor one that asked for logprobs."""
        config = self._config()
        deferring = config.async_output or config.async_scheduling
        return deferring and seq.guide is None and seq.logprobs is None

    def record_token(self, seq: Sequence, token: int, now: float) -> None:
        """Now: the token, and the rules that read ids and counts (EOS, stop tokens, max_tokens), so the
        next schedule knows who continues. Later (drain): its text and the stop strings."""
        reason, in_text = self.output.record_token(seq, token, now)
        if reason is not None:
            self._finish(seq, reason)  # its blocks go back before the next schedule
        self._pending.append((seq, token, reason, in_text))

    def drain(self) -> list[RequestOutput]:
        """The deferred texts of the last step, in order. A stop string found here ends a request that
        may already be in the step being computed; step() then drops that step's token for it."""
        pending, self._pending = self._pending, []
        outputs = []
        for seq, token, reason, in_text in pending:
            if seq.finish_reason != "abort":  # aborted between steps: nobody reads its text
                _keep(outputs, self._add_text(seq, token, reason, in_text))
        return outputs

    def _add_text(self, seq: Sequence, token: int, reason: str | None, in_text: bool) -> RequestOutput | None:
        final = self.output.add_text(seq, token, reason, in_text)
        if final is not None and not seq.is_finished:
            self._finish(seq, final)
        elif final is not None:
            seq.finish_reason = final  # a stop token or string on the token that reached max_tokens: "stop"
        return self.output.emit(seq)

    # -- asynchronous scheduling (vLLM's async scheduling, SGLang's overlap scheduler) -------------
    def sample_ahead(self, logits: torch.Tensor, sampling: list[Sequence], sampler, runner) -> _Tokens:
        """Sample without waiting: the tokens go to the runner's `sampled` buffer, where the next step's
        input ids read them on the device, and start their copy to the host, read by resolve. The
        engine's sampler and runner, passed at each call: a test or a notebook may swap them."""
        tokens = sampler.sample(logits, sampling)  # (S,) on the device
        runner.sampled[: len(sampling)].copy_(tokens)
        host = self._token_host[0][: len(sampling)]
        self._token_host.reverse()  # the next step's copy goes to the other buffer
        host.copy_(tokens, non_blocking=True)
        event = None
        if self._config().device.startswith("cuda"):
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(tokens.device))
        return _Tokens(host, event)

    def reserve(self, sampling: list[Sequence], tokens: _Tokens, now: float) -> None:
        """Each live sequence gets a placeholder for its token, -(1 + its row), and the rules that read
        only counts (max_tokens, the model length) end requests now, so the next schedule leaves them
        out. The ids, their text and the rules that read them come with resolve."""
        entries = []
        for row, seq in enumerate(sampling):  # none finished: step() left those out
            reason = self.output.reserve_token(seq, -1 - row, now)
            entries.append((seq, row, len(seq.output_token_ids) - 1))
            if reason is not None:
                self._finish(seq, reason)  # its blocks go back; the last token's K/V is never needed
        self._inflight = _InFlight(entries, tokens)

    def resolve(self) -> list[RequestOutput]:
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
            _keep(outputs, self._add_text(seq, ids[row], reason, in_text))
        return outputs


def _keep(outputs: list[RequestOutput], out: RequestOutput | None) -> None:
    if out is not None:  # None: a final_only request that goes on
        outputs.append(out)
