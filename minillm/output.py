"""Output processing: from sampled tokens to what a caller sees (vLLM's OutputProcessor).

Per sampled token: detokenise incrementally, check the stop conditions in vLLM's order (EOS or a stop
token, a stop string, a completed constraint, max_tokens or max_model_len), and cut the text delta a
stream shows (text that could still be the start of a stop string is held back). For constrained
requests (chapter 5) it also advances the guide and decides whether the compressed FSM can jump
forward; it returns that decision and the engine acts on it (the scheduler owns the blocks).

Checked by: pytest -m ch1 -k "stop or detok or stream", pytest -m ch5.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from minillm.request import RequestOutput, Sequence
from minillm.tokenizer import IncrementalDetokenizer, Tokenizer


@dataclass
class JumpForward:
    """The compressed FSM's decision for one request: its output becomes output_ids, in state `state`."""

    output_ids: list[int]
    num_kept: int  # how many of the old output tokens stay
    state: int
    text: str  # the output text after the jump
    done: bool  # the forced text completes the constraint: the request ends without another pass


class OutputProcessor:
    def __init__(self, tokenizer: Tokenizer | None, eos_token_ids: set[int], max_model_len: int):
        self.tokenizer, self.eos_token_ids, self.max_model_len = tokenizer, eos_token_ids, max_model_len
        self._detok: dict[int, IncrementalDetokenizer] = {}
        self.guide_s = 0.0  # host time advancing guides and deciding jumps (chapter 5's cost)

    def add(self, seq: Sequence) -> None:
        if self.tokenizer is not None:
            self._detok[seq.request_id] = IncrementalDetokenizer(self.tokenizer, seq.prompt_token_ids)

    def drop(self, seq: Sequence) -> None:
        self._detok.pop(seq.request_id, None)

    def append_token(self, seq: Sequence, token: int, now: float) -> str | None:
        """Append a sampled token (advancing its guide), detokenize, and return the finish reason if it
        ends the request ("stop" | "length"), else None. The caller finishes the request."""
        reason, in_text = self.record_token(seq, token, now)
        return self.add_text(seq, token, reason, in_text)

    def reserve_token(self, seq: Sequence, placeholder: int, now: float) -> str | None:
        """Async scheduling: the step's token is still on the device. Append a negative placeholder
        (the next step's input reads the token there; record_token fills it in later) and apply the rules
        that read only counts: "length" if the request can take no further step."""
        seq.output_token_ids.append(placeholder)
        seq.token_times.append(now)
        return self._length_reason(seq)

    def _length_reason(self, seq: Sequence) -> str | None:
        if len(seq.output_token_ids) >= seq.params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def record_token(
        self, seq: Sequence, token: int, now: float, index: int | None = None
    ) -> tuple[str | None, bool]:
        """The part of append_token that needs no text: append the token (advancing its guide) and apply
        the rules that read ids and counts. Returns (the finish reason so far, whether the token's text
        belongs to the output: not for EOS or a stop token). add_text must follow, for this token, before
        the next one is recorded. index: the output position of a placeholder (reserve_token) to fill."""
        p = seq.params
        if seq.guide is not None and token not in self.eos_token_ids:
            t0 = time.perf_counter()
            state = seq.guide.next_state(seq.guide_state, token)
            self.guide_s += time.perf_counter() - t0
            if state is None:  # the mask makes this unreachable
                raise RuntimeError(f"request {seq.request_id}: token {token} violates its constraint")
            seq.guide_state = state
        if index is None:
            seq.output_token_ids.append(token)
            seq.token_times.append(now)
        else:
            seq.output_token_ids[index] = token
            seq.token_times[index] = now  # when the host learns it, as a client would
        eos = token in self.eos_token_ids and (not p.ignore_eos or seq.guide is not None)
        if eos or token in p.stop_token_ids:
            return "stop", False  # the stop token stays in token_ids, out of the text
        if seq.guide is not None and seq.guide.is_terminal(seq.guide_state):
            return "stop", True  # the constraint is complete: nothing but EOS could follow
        return self._length_reason(seq), True

    def add_text(self, seq: Sequence, token: int, reason: str | None, in_text: bool) -> str | None:
        """The rest of append_token: detokenize the token and look for stop strings, which end the
        request before any other rule (vLLM's order); returns the finish reason."""
        p, detok = seq.params, self._detok.get(seq.request_id)
        if in_text:
            new_text = detok.step(token) if detok is not None else ""
            start = max(0, len(seq.output_text) - p.longest_stop + 1)
            seq.output_text += new_text
            hits = [i for i in (seq.output_text.find(s, start) for s in p.stop) if i >= 0]
            if hits:
                seq.output_text = seq.output_text[: min(hits)]  # the text ends before the stop string
                reason = "stop"
                detok = None  # what followed the stop string is dropped, not flushed
        if reason is not None:
            if detok is not None:
                seq.output_text += detok.flush()
            self.drop(seq)
        return reason

    def jump_forward(self, seq: Sequence) -> JumpForward | None:
        """Compressed FSM (SGLang): the forced text after the request's output, if it can be appended
        at once and re-prefilled in one pass. None when a length limit, a stop token or a stop string
        inside the forced text means it must be decoded the usual way (so the usual checks end it)."""
        t0 = time.perf_counter()
        try:
            jump = seq.guide.jump_forward(seq.output_token_ids, seq.guide_state)
            if jump is None:
                return None
            p, ids = seq.params, jump.output_ids
            done = seq.guide.is_terminal(jump.state)
            room = min(p.max_tokens, self.max_model_len - seq.num_prompt_tokens)
            if len(ids) > room or (len(ids) == room and not done):
                return None
            if any(t in p.stop_token_ids for t in ids[jump.num_kept :]):
                return None
            text = self.tokenizer.decode(ids)
            start = len(seq.output_text)
            if any(stop in text[max(0, start - len(stop) + 1) :] for stop in p.stop):
                return None
            return JumpForward(ids, jump.num_kept, jump.state, text, done)
        finally:
            self.guide_s += time.perf_counter() - t0

    def apply_jump(self, seq: Sequence, jump: JumpForward, now: float) -> None:
        """Rewrite the request's output after the engine gave its blocks back (under the old tokens,
        which is what they hold)."""
        seq.num_forced_tokens += len(jump.output_ids) - len(seq.output_token_ids)
        if seq.logprobs is not None:  # forced tokens were not sampled: no logprob (chapter 9)
            seq.logprobs = seq.logprobs[: jump.num_kept] + [None] * (len(jump.output_ids) - jump.num_kept)
        seq.output_token_ids = jump.output_ids
        seq.token_times = seq.token_times[: jump.num_kept] + [now] * (len(jump.output_ids) - jump.num_kept)
        seq.guide_state = jump.state
        seq.output_text = jump.text
        if jump.done:
            self.drop(seq)
        else:
            self._detok[seq.request_id] = IncrementalDetokenizer(self.tokenizer, seq.token_ids)

    def emit(self, seq: Sequence) -> RequestOutput | None:
        """The request's output with the text that is new since the last one; None for a final_only
        request that has not finished (no output object, no token_ids copy: LLM.generate's path)."""
        if seq.params.output_kind == "final_only" and not seq.is_finished:
            return None
        if seq.is_finished:
            visible = len(seq.output_text)
        else:  # hold back what could still turn out to be the start of a stop string
            visible = len(seq.output_text) - max(0, seq.params.longest_stop - 1)
        delta = seq.output_text[seq.num_emitted_chars : visible] if visible > seq.num_emitted_chars else ""
        seq.num_emitted_chars = max(seq.num_emitted_chars, visible)
        return seq.to_output(delta)
