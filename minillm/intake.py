"""Request intake: every check a request must pass, in one path, before anything is queued.

`Intake.make_sequences(prompts, params)` validates a whole call (types, sampling parameters, the
constraint, each prompt's ids and length, room in the KV pool) and only then builds the Sequences; a
bad request anywhere in a batch raises a ValueError naming the field and the prompt's index, and
nothing is queued or allocated. Engine.add_request and LLM.generate both come through here.

Checked by: pytest -m ch1 -k "error or reject", pytest tests/test_lifecycle.py.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence as SequenceABC

import torch

from minillm.constrained.regex import RegexError
from minillm.request import SamplingParams, Sequence


class Intake:
    def __init__(self, engine):
        self.engine = engine  # reads its config, tokenizer, model config, guides and KV capacity

    def normalize(self, prompts, sampling_params, prompt_token_ids) -> tuple[list, list[SamplingParams]]:
        """LLM.generate's arguments -> one prompt (text or ids) and one SamplingParams per request."""
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("pass either prompts or prompt_token_ids, not both")
        if prompts is None and prompt_token_ids is None:
            raise ValueError("prompts: nothing to generate from (pass prompts or prompt_token_ids)")
        if prompts is not None:
            if isinstance(prompts, str):
                prompts = [prompts]
            if not isinstance(prompts, SequenceABC):
                raise ValueError(
                    f"prompts must be a string or a list of strings, got {type(prompts).__name__}"
                )
            inputs = list(prompts)
            if any(not isinstance(p, str) for p in inputs):
                raise ValueError("prompts must be strings; pass token ids as prompt_token_ids")
        else:
            if isinstance(prompt_token_ids, torch.Tensor) or not isinstance(prompt_token_ids, SequenceABC):
                raise ValueError(
                    "prompt_token_ids must be a list of ints or a list of lists of ints, "
                    f"got {type(prompt_token_ids).__name__}"
                )
            inputs = list(prompt_token_ids)
            if inputs and isinstance(inputs[0], int):
                inputs = [inputs]
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(inputs)
        elif isinstance(sampling_params, SequenceABC) and not isinstance(sampling_params, str):
            params = list(sampling_params)
            if len(params) != len(inputs):
                raise ValueError(
                    f"sampling_params: got {len(params)} for {len(inputs)} prompts (pass one, or one per prompt)"
                )
        else:
            raise ValueError(
                "sampling_params must be a SamplingParams or a list of them, "
                f"got {type(sampling_params).__name__}"
            )
        return inputs, params

    def make_sequences(self, prompts: list, params: list[SamplingParams], arrival_time: float | None = None):
        """Validate every request of a call, then build their Sequences (ids not yet assigned)."""
        for sp in params:
            self.check_params(sp)
        guides = [self.compile_guide(sp) if sp.constrained else None for sp in params]
        encoded = [self.encode_prompt(i, p) for i, p in enumerate(prompts)]
        for i, (ids, sp) in enumerate(zip(encoded, params)):
            self.check_fits(i, ids, sp)
        now = time.perf_counter() if arrival_time is None else arrival_time
        seqs = []
        for prompt, sp, ids, guide in zip(prompts, params, encoded, guides):
            seq = Sequence(-1, ids, sp, prompt=prompt if isinstance(prompt, str) else None, arrival_time=now)
            if guide is not None:
                seq.guide, seq.guide_state = guide, guide.initial_state
            if sp.seed is not None:
                seq.generator = torch.Generator(device=self.engine.config.device).manual_seed(sp.seed)
            seqs.append(seq)
        return seqs

    def check_params(self, params) -> None:
        e = self.engine
        if not isinstance(params, SamplingParams):
            raise ValueError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
        if params.constrained and e.config.constrained_decoding is None:
            raise ValueError(
                "SamplingParams.regex/json_schema/choice need constrained decoding: stage 'fsm', or "
                "constrained_decoding='naive' | 'indexed' | 'compressed'"
            )
        if params.constrained and e.guides is None:
            raise ValueError("SamplingParams.regex/json_schema/choice: this model has no tokenizer")

    def compile_guide(self, params: SamplingParams):
        """The request's constraint as a guide (cached); a bad pattern or schema is a ValueError naming
        the field."""
        field = next(n for n in ("regex", "json_schema", "choice") if getattr(params, n) is not None)
        try:
            return self.engine.guides.guide_for(params)
        except (RegexError, ValueError) as err:
            raise ValueError(f"SamplingParams.{field}: {err}") from err

    def encode_prompt(self, index: int, prompt) -> list[int]:
        """Tokenize (text) or copy (token ids) one prompt and validate it; index names it in errors."""
        e = self.engine
        if isinstance(prompt, str):
            if e.tokenizer is None:
                raise ValueError("prompt: this model has no tokenizer; pass prompt_token_ids instead")
            ids = e.tokenizer.encode(prompt)
        elif isinstance(prompt, (list, tuple)):
            ids = list(prompt)
        else:
            raise ValueError(
                f"prompt_token_ids {index}: expected a list of ints, got {type(prompt).__name__}"
            )
        if len(ids) == 0:
            raise ValueError(f"prompt {index}: the prompt is empty")
        vocab = e.model_config.vocab_size
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(
                f"prompt_token_ids {index}: id {bad[0]!r} is outside the vocabulary [0, {vocab})"
            )
        if len(ids) >= e.max_model_len:
            raise ValueError(
                f"prompt {index}: {len(ids)} tokens leave no room to generate within max_model_len={e.max_model_len}"
            )
        c = e.config
        if len(ids) > c.max_num_batched_tokens and not c.chunked_prefill:
            raise ValueError(
                f"prompt {index}: {len(ids)} tokens exceed max_num_batched_tokens={c.max_num_batched_tokens}"
                " (prompts are not split in this stage)"
            )
        return ids

    def check_fits(self, index: int, ids: list[int], params: SamplingParams) -> None:
        """A request whose prompt + max_tokens can never fit the KV pool would wait forever: reject it.
        One that only max_model_len cuts short is accepted with a warning (it ends with "length")."""
        e = self.engine
        wanted = len(ids) + params.max_tokens
        need = min(wanted, e.max_model_len)
        capacity = e.kv_capacity_tokens()
        if need > capacity:
            raise ValueError(
                f"prompt {index}: prompt + max_tokens = {need} tokens can never fit the KV pool of {capacity} "
                "tokens (raise kv_cache_tokens or lower max_tokens)"
            )
        if wanted > e.max_model_len:
            warnings.warn(
                f"prompt {index}: prompt ({len(ids)}) + SamplingParams.max_tokens ({params.max_tokens}) exceeds "
                f"max_model_len={e.max_model_len}: the output stops at {e.max_model_len - len(ids)} tokens",
                stacklevel=4,
            )
