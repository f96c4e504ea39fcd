"""Chapter 9: the in-process backend. Runtime(llm) owns one loop thread that steps llm's engine
while any program waits on it; every program thread hands its requests to that loop, so requests
from many programs (run_batch, forks) share each step, and text they share is found in the radix
cache (stage radix or later).

select sends one request per choice, prefix + choice, each asking for the logprobs of its choice
tokens only (SamplingParams.prompt_logprobs with logprob_start_len at the choice's first token): the
engine then lets the prefix cache serve the prefix, as SGLang does, and computes the rest.

While a Runtime has requests in flight its loop thread owns the engine: do not call llm.generate on
the same LLM from another thread meanwhile (between programs it is fine).

Checked by: pytest -m ch9 tests/test_ch9_lang.py.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from minillm.lang.ir import CHOICES_METHODS, choice_start
from minillm.request import RequestOutput, SamplingParams


class Runtime:
    def __init__(self, llm):
        self.llm, self.engine, self.tokenizer = llm, llm.engine, llm.engine.tokenizer
        if self.tokenizer is None:
            raise ValueError("llm: Runtime needs a model with a tokenizer (programs are text)")
        self._cond = threading.Condition()
        self._incoming: list[tuple[object, SamplingParams, Future]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.num_requests = 0
        self.num_steps = 0  # engine steps (forward passes) this runtime ran

    # -- what programs call -----------------------------------------------------------------------
    def generate(self, prompt: str, params: SamplingParams) -> tuple[str, dict]:
        out = self.submit(prompt, params).result()
        return out.text, _meta(out)

    def select(self, prefix: str, choices: list[str], choices_method: str) -> tuple[int, dict]:
        fulls = [self.tokenizer.encode(prefix + c) for c in choices]
        starts = [self._choice_start(ids, len(prefix)) for ids in fulls]
        if min(starts) == 0:
            raise ValueError("select: there must be text before it (a first token has no logprob)")
        futures = [
            self.submit(
                ids, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, logprob_start_len=k)
            )
            for ids, k in zip(fulls, starts)
        ]
        outs = [f.result() for f in futures]
        logprobs = [
            [out.prompt_logprobs[p][ids[p]] for p in range(k, len(ids))]
            for ids, k, out in zip(fulls, starts, outs)
        ]
        index = CHOICES_METHODS[choices_method](logprobs)
        meta = {
            "choice_logprobs": logprobs,
            "prompt_tokens": sum(len(ids) for ids in fulls),
            "cached_tokens": sum(o.metrics.num_cached_tokens for o in outs),
        }
        return index, meta

    def _choice_start(self, ids: list[int], prefix_len: int) -> int:
        return choice_start(lambda j: len(self.tokenizer.decode(ids[:j])), len(ids), prefix_len)

    # -- the loop ---------------------------------------------------------------------------------
    def submit(self, prompt, params: SamplingParams) -> Future:
        """Queue one request (text or token ids) for the loop thread; the future holds its output."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("this Runtime is shut down")
            self._incoming.append((prompt, params, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="minillm-runtime", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def shutdown(self) -> None:
        """Stop the loop thread once nothing is in flight (the LLM stays usable: llm.generate)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        waiting: dict[int, Future] = {}  # request id -> its future
        while True:
            with self._cond:
                while not self._incoming and not waiting:
                    if self._closed:
                        return
                    self._cond.wait()
                incoming, self._incoming = self._incoming, []
            for prompt, params, future in incoming:  # one by one: a bad request fails only itself
                try:
                    rid = self.engine.add_requests([prompt], [params])[0]
                except ValueError as err:
                    future.set_exception(err)
                    continue
                waiting[rid] = future
                self.num_requests += 1
            if not waiting:
                continue
            try:
                outputs = self.engine.step()
            except Exception as err:  # the engine is broken: fail everyone rather than hang them
                for rid, future in waiting.items():
                    self.engine.abort_request(rid)
                    future.set_exception(err)
                waiting.clear()
                continue
            self.num_steps += 1
            for out in outputs:
                if out.finished and out.request_id in waiting:
                    waiting.pop(out.request_id).set_result(out)


def _meta(out: RequestOutput) -> dict:
    m = out.metrics
    return {
        "prompt_tokens": len(out.prompt_token_ids),
        "completion_tokens": len(out.token_ids),
        "cached_tokens": m.num_cached_tokens if m else 0,
        "finish_reason": out.finish_reason,
    }
