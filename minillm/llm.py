"""LLM: the offline entry point, shaped like vLLM's.

from minillm import LLM, SamplingParams
llm = LLM(stage="naive")
out = llm.generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0.0))[0]
print(out.text, out.metrics.ttft)
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from tqdm import tqdm

from minillm.config import DEFAULT_STAGE, EngineConfig
from minillm.engine import Engine
from minillm.request import RequestOutput, SamplingParams


class LLM:
    def __init__(
        self,
        model: str | None = None,
        stage: str = DEFAULT_STAGE,
        *,
        load_format: str = "auto",
        tokenizer: str | None = None,
        **engine_options,
    ):
        """model: a Hugging Face checkpoint folder (default: the embedded DEFAULT_MODEL) or, with
        load_format="dummy", a named config such as "qwen3-0.6b". engine_options: EngineConfig fields
        (device, dtype, kv_cache_tokens, block_size, max_num_seqs, max_num_batched_tokens, max_model_len,
        seed, ...); the stage preset supplies the rest."""
        if model is None:
            from minillm import DEFAULT_MODEL

            model = DEFAULT_MODEL
        self.config = EngineConfig.from_stage(stage, **engine_options)
        self.engine = Engine(model, self.config, load_format=load_format, tokenizer=tokenizer)
        self.tokenizer = self.engine.tokenizer

    def _add_all(self, prompts, sampling_params, prompt_token_ids) -> list[int]:
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("pass either prompts or prompt_token_ids, not both")
        if prompts is None and prompt_token_ids is None:
            raise ValueError("prompts: nothing to generate from (pass prompts or prompt_token_ids)")
        if prompts is not None:
            inputs = [prompts] if isinstance(prompts, str) else list(prompts)
            if any(not isinstance(p, str) for p in inputs):
                raise ValueError("prompts must be strings; pass token ids as prompt_token_ids")
        else:
            inputs = list(prompt_token_ids)
            if inputs and isinstance(inputs[0], int):
                inputs = [inputs]
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(inputs)
        else:
            params = list(sampling_params)
            if len(params) != len(inputs):
                raise ValueError(
                    f"sampling_params: got {len(params)} for {len(inputs)} prompts (pass one, or one per prompt)"
                )
        for sp in params:  # validate everything before queueing anything
            self.engine.check_params(sp)
            if sp.constrained:
                self.engine.compile_guide(sp)  # cached: add_request finds it compiled
        encoded = [self.engine.encode_prompt(i, p) for i, p in enumerate(inputs)]
        for i, (ids, sp) in enumerate(zip(encoded, params)):
            self.engine.check_fits(i, ids, sp)
        now = time.perf_counter()
        return [
            self.engine.add_request(p, sp, arrival_time=now, prompt_token_ids=ids)
            for p, sp, ids in zip(inputs, params, encoded)
        ]

    def generate(
        self,
        prompts: str | Sequence[str] | None = None,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        prompt_token_ids: Sequence[Sequence[int]] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order of the prompts."""
        ids = self._add_all(prompts, sampling_params, prompt_token_ids)
        done: dict[int, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="generate", disable=not use_tqdm)
        while self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished:
                    done[out.request_id] = out
                    bar.update(1)
        bar.close()
        return [done[i] for i in ids]

    def stream(self, prompts=None, sampling_params=None, *, prompt_token_ids=None) -> Iterator[RequestOutput]:
        """Yield an output for every request that advances at each step; read `.delta_text`."""
        self._add_all(prompts, sampling_params, prompt_token_ids)
        while self.engine.has_unfinished():
            yield from self.engine.step()
