"""Requests: what a user asks for (SamplingParams), what the engine tracks (Sequence), and what comes
back (RequestOutput with per-request latency metrics). Names follow vLLM.

Checked by: pytest -m ch1.
"""

from __future__ import annotations

import enum
import sys
import time
from dataclasses import dataclass, field

import torch

# torch.Generator.manual_seed takes a seed in [-2**63, 2**64 - 1] (a negative seed s acts as 2**64 + s)
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to us


def _is_finite(value) -> bool:
    """A real number a float can hold: no nan, no inf, no int past float's range (False for those)."""
    return (_is_int(value) or isinstance(value, float)) and abs(value) <= sys.float_info.max


OUTPUT_KINDS = ("cumulative", "final_only")


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = whole vocabulary
    top_p: float = 1.0  # nucleus: smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # per-request generator: same seed, same tokens, whatever the batch
    max_tokens: int = 16
    stop: str | list[str] | None = None  # stop strings; the output text ends before them
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    regex: str | None = None  # constrained decoding (chapter 5)
    json_schema: dict | str | None = None
    choice: list[str] | None = None
    # logprobs (chapter 9, as vLLM): None = off; k >= 0 = each token's logprob plus the k most likely
    logprobs: int | None = None  # of each sampled token, from the raw logits (before masks, temperature)
    prompt_logprobs: int | None = None  # of each prompt token from logprob_start_len on
    logprob_start_len: int = 0  # SGLang's name: the prefix cache may serve the tokens before it
    # vLLM's RequestOutputKind: "cumulative" = an output at every step that advances the request (text
    # so far plus delta_text); "final_only" = one output, when it finishes (LLM.generate asks for this)
    output_kind: str = "cumulative"

    def __post_init__(self):
        if not _is_finite(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"SamplingParams.temperature must be a finite number >= 0, got {self.temperature!r}"
            )
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0 (0 disables it), got {self.top_k!r}")
        if not _is_finite(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be a number in (0, 1], got {self.top_p!r}")
        if not _is_int(self.max_tokens) or self.max_tokens <= 0:
            raise ValueError(f"SamplingParams.max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if self.seed is not None and (not _is_int(self.seed) or not SEED_MIN <= self.seed <= SEED_MAX):
            raise ValueError(
                f"SamplingParams.seed must be None or an int in [-2**63, 2**64 - 1] (torch.Generator's range), "
                f"got {self.seed!r}"
            )
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"SamplingParams.ignore_eos must be a bool, got {self.ignore_eos!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        self._check_constraint()
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and (not _is_int(k) or k < 0):
                raise ValueError(f"SamplingParams.{name} must be None or an int >= 0, got {k!r}")
        if not _is_int(self.logprob_start_len) or self.logprob_start_len < 0:
            raise ValueError(
                f"SamplingParams.logprob_start_len must be an int >= 0, got {self.logprob_start_len!r}"
            )
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(
                f"SamplingParams.output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}"
            )
        self.stop_token_ids = list(self.stop_token_ids or [])
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise ValueError(
                f"SamplingParams.stop_token_ids must hold ints >= 0, got {self.stop_token_ids!r}"
            )

    def _check_constraint(self) -> None:
        given = [n for n in ("regex", "json_schema", "choice") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"SamplingParams: give at most one of regex, json_schema, choice (got {given})")
        if self.regex is not None and (not isinstance(self.regex, str) or not self.regex):
            raise ValueError(f"SamplingParams.regex must be a non-empty string, got {self.regex!r}")
        if self.choice is not None:
            if isinstance(self.choice, str):
                raise ValueError("SamplingParams.choice must be a list of strings, got a string")
            self.choice = list(self.choice)
            if not self.choice or any(not isinstance(c, str) or not c for c in self.choice):
                raise ValueError(f"SamplingParams.choice must hold non-empty strings, got {self.choice!r}")
        schema = self.json_schema
        if (
            schema is not None
            and not isinstance(schema, (dict, str, bool))
            and not hasattr(schema, "model_json_schema")
        ):
            raise ValueError(
                "SamplingParams.json_schema must be a dict, a JSON string or a pydantic model class, "
                f"got {type(schema).__name__}"
            )

    @property
    def longest_stop(self) -> int:
        return max((len(s) for s in self.stop), default=0)

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5  # as vLLM: dividing logits by a tinier temperature overflows

    @property
    def constrained(self) -> bool:
        return self.regex is not None or self.json_schema is not None or self.choice is not None


@dataclass
class RequestMetrics:
    """Latencies in seconds, measured from the request's arrival (vLLM bench serve's definitions)."""

    ttft: float  # time to first token
    tpot: float  # time per output token after the first: (e2e - ttft) / (n - 1); 0 for one token
    itl: list[float]  # inter-token latencies: gaps between consecutive output tokens
    e2e: float  # arrival to last token
    num_cached_tokens: int = 0  # prompt tokens served from a prefix cache (chapter 3)
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_steps: int = 0  # engine steps (forward passes) this request took part in
    num_forced_tokens: int = 0  # output tokens added by jump-forward, without a pass each (chapter 5)


@dataclass
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" | "length" once finished
    metrics: RequestMetrics | None = None
    delta_text: str = ""  # text added since the previous output of this request (streaming)
    # chapter 9, when SamplingParams asks: {token id: logprob}, the actual token first, then the top k
    logprobs: list[dict[int, float] | None] | None = None  # one per output token (None: jump-forward)
    prompt_logprobs: list[dict[int, float] | None] | None = None  # one per prompt token; None before
    # logprob_start_len and at position 0 (nothing predicts the first token)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One request as the engine sees it: tokens so far and how many of them have K/V computed."""

    request_id: int
    prompt_token_ids: list[int]
    params: SamplingParams
    prompt: str | None = None
    arrival_time: float = field(default_factory=time.perf_counter)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    token_times: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None
    block_table: list[int] = field(default_factory=list)  # KV blocks (ch1: one row of max_model_len)
    output_text: str = ""
    num_emitted_chars: int = 0  # how much of output_text has been streamed (stop strings are held back)
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache at first admission
    num_preemptions: int = 0
    num_steps: int = 0  # engine steps this sequence took part in
    guide: object | None = None  # constrained decoding (chapter 5): a minillm.constrained.guide.Guide
    guide_state: int = 0  # the guide's DFA state after the output so far
    num_forced_tokens: int = 0
    logprobs: list | None = None  # chapter 9: filled when params.logprobs is set
    prompt_logprobs: list | None = None  # chapter 9: filled when params.prompt_logprobs is set

    def __post_init__(self):
        if self.params.logprobs is not None:
            self.logprobs = []
        if self.params.prompt_logprobs is not None:
            self.prompt_logprobs = [None] * max(1, min(self.params.logprob_start_len, self.num_prompt_tokens))

    @property
    def max_cached_tokens(self) -> int:
        """Most prompt tokens a prefix cache may serve. A token's logprob comes from the logits of the
        token before it, so a request asking for prompt logprobs from position p must compute p - 1 on
        (SGLang caps its radix match at logprob_start_len the same way; vLLM disables the hit)."""
        if self.params.prompt_logprobs is None:
            return self.num_tokens
        return max(0, self.params.logprob_start_len - 1)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def awaiting_token(self) -> bool:
        """Async scheduling: the newest output token is still on the device (a negative placeholder)."""
        return bool(self.output_token_ids) and self.output_token_ids[-1] < 0

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def metrics(self) -> RequestMetrics:
        t = self.token_times
        ttft = t[0] - self.arrival_time
        e2e = t[-1] - self.arrival_time
        itl = [b - a for a, b in zip(t, t[1:])]
        tpot = (e2e - ttft) / (len(t) - 1) if len(t) > 1 else 0.0
        return RequestMetrics(
            ttft,
            tpot,
            itl,
            e2e,
            self.num_cached_tokens,
            self.num_prompt_tokens,
            len(t),
            self.num_steps,
            self.num_forced_tokens,
        )

    def to_output(self, delta_text: str = "") -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            text=self.output_text,
            token_ids=list(self.output_token_ids),
            finished=self.is_finished,
            finish_reason=self.finish_reason,
            metrics=self.metrics() if self.is_finished else None,
            delta_text=delta_text,
            logprobs=None if self.logprobs is None else list(self.logprobs),
            prompt_logprobs=self.prompt_logprobs if self.is_finished else None,
        )
