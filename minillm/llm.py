"""LLM: the offline entry point, shaped like vLLM's.

from minillm import LLM, SamplingParams
llm = LLM(stage="naive")
out = llm.generate(["def fib(n):"], SamplingParams(max_tokens=32, temperature=0.0))[0]
print(out.text, out.metrics.ttft)

A call owns the requests it adds: generate() and stream() return only their own outputs, and abort
whatever of theirs is unfinished when they end early (an exception, Ctrl-C, a `break` out of a stream).

Checked by: pytest -m ch1, tests/test_lifecycle.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from tqdm import tqdm

from minillm.config import DEFAULT_MODEL, DEFAULT_STAGE, EngineConfig
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
        self.config = EngineConfig.from_stage(stage, **engine_options)
        self.engine = Engine(
            model or DEFAULT_MODEL, self.config, load_format=load_format, tokenizer=tokenizer
        )
        self.tokenizer = self.engine.tokenizer

    def _add_all(
        self, prompts, sampling_params, prompt_token_ids, output_kind: str | None = None
    ) -> list[int]:
        inputs, params = self.engine.intake.normalize(prompts, sampling_params, prompt_token_ids)
        if output_kind is not None:  # the caller's objects stay as they were
            # what is not a SamplingParams is refused by add_requests, naming it
            params = [
                replace(p, output_kind=output_kind) if isinstance(p, SamplingParams) else p for p in params
            ]
        return self.engine.add_requests(inputs, params)

    def generate(
        self,
        prompts: str | Sequence[str] | None = None,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        prompt_token_ids: Sequence[Sequence[int]] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order of the prompts. As vLLM's
        LLM.generate, the requests ask for their final output only (output_kind="final_only"): no output
        objects are built while they run."""
        ids = self._add_all(prompts, sampling_params, prompt_token_ids, output_kind="final_only")
        done: dict[int, RequestOutput] = {}
        with tqdm(total=len(ids), desc="generate", disable=not use_tqdm) as bar:
            for out in self._run(ids):
                if out.finished:
                    done[out.request_id] = out
                    bar.update(1)
        return [done[i] for i in ids]

    def stream(self, prompts=None, sampling_params=None, *, prompt_token_ids=None) -> Iterator[RequestOutput]:
        """Yield an output for every request of this call that advances at each step; read `.delta_text`."""
        yield from self._run(self._add_all(prompts, sampling_params, prompt_token_ids))

    def reset_prefix_cache(self) -> bool:
        """Forget every cached prefix (vLLM's LLM.reset_prefix_cache), so that the next requests start
        cold; False, and nothing forgotten, while requests are unfinished."""
        return self.engine.reset_prefix_cache()

    def _run(self, ids: list[int]) -> Iterator[RequestOutput]:
        """Step until this call's requests finish, yielding only their outputs. Leaving early (break,
        an exception, Ctrl-C) aborts the ones still unfinished, so the next call starts clean."""
        mine, unfinished = set(ids), set(ids)
        try:
            while unfinished:
                if not self.engine.has_unfinished():  # aborted from outside (Engine.abort_request)
                    raise RuntimeError(f"requests {sorted(unfinished)} were aborted before they finished")
                for out in self.engine.step():
                    if out.request_id in mine:
                        if out.finished:
                            unfinished.discard(out.request_id)
                        yield out
        finally:
            for rid in unfinished:
                self.engine.abort_request(rid)
