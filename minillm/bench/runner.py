"""Run a workload through minillm (any stage) or through transformers' generate, collecting the same
per-request metrics for both, with a progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from minillm.bench.metrics import summarize
from minillm.bench.workloads import Workload
from minillm.request import RequestMetrics, SamplingParams


@dataclass
class RunResult:
    label: str
    metrics: list[RequestMetrics]  # in workload order
    duration: float
    token_ids: list[list[int]] | None = None  # outputs in workload order (minillm runs)

    def summary(self) -> dict:
        return {"label": self.label, **summarize(self.metrics, self.duration)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_llm(llm, workload: Workload, label: str, *, progress: bool = True, warmup: bool = True) -> RunResult:
    """Feed the workload to llm.engine (honouring arrival times) and step until every request ends."""
    engine = llm.engine
    if warmup:
        # first-call costs (allocator, kernels, per-shape plans such as cuDNN's attention plans) stay out
        # of the numbers: the first request's whole prompt, then an empty prefix cache, so that the run
        # is not served the prompt the warm-up just computed
        llm.generate(
            prompt_token_ids=[workload.requests[0].prompt_token_ids],
            sampling_params=SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True),
        )
        if not llm.reset_prefix_cache():
            raise RuntimeError("the prefix cache could not be emptied after the warm-up")
        engine.step_stats.clear()  # the run's steps only
    order = sorted(range(len(workload.requests)), key=lambda i: workload.requests[i].arrival_time)
    ids: dict[int, int] = {}
    done: dict[int, RequestMetrics] = {}
    tokens: dict[int, list[int]] = {}
    bar = tqdm(total=len(order), desc=label, disable=not progress, leave=False)
    _sync(engine.config.device)
    start = time.perf_counter()
    while order or engine.has_unfinished():
        now = time.perf_counter() - start
        while order and workload.requests[order[0]].arrival_time <= now:
            i = order.pop(0)
            r = workload.requests[i]
            params = SamplingParams(
                max_tokens=r.max_tokens, temperature=0.0, ignore_eos=True, output_kind="final_only"
            )  # read when it finishes, as vLLM's offline benchmarks read LLM.generate's outputs
            rid = engine.add_request(r.prompt_token_ids, params, arrival_time=start + r.arrival_time)
            ids[rid] = i
        if not engine.has_unfinished():
            time.sleep(max(0.0, workload.requests[order[0]].arrival_time - (time.perf_counter() - start)))
            continue
        for out in engine.step():
            if out.finished:
                done[ids[out.request_id]] = out.metrics
                tokens[ids[out.request_id]] = out.token_ids
                bar.update(1)
    duration = time.perf_counter() - start
    bar.close()
    n = len(workload.requests)
    return RunResult(label, [done[i] for i in range(n)], duration, [tokens[i] for i in range(n)])


class _TokenClock:
    """A transformers StoppingCriteria that never stops: it records when each new token exists."""

    def __init__(self, device: str):
        self.device, self.times = device, []

    def __call__(self, input_ids, scores, **kwargs):
        _sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def run_hf_generate(
    hf_model,
    workload: Workload,
    batch_size: int,
    label: str = "transformers generate",
    *,
    progress: bool = True,
    cache_implementation: str | None = None,
) -> RunResult:
    """transformers' generate in static batches of batch_size (left-padded), greedy, EOS ignored.
    cache_implementation="static": a fixed-size KV cache, with which generate compiles the forward
    (the path transformers documents for fast generation)."""
    from transformers import StoppingCriteriaList

    device = str(hf_model.device)
    reqs = workload.requests
    metrics: list[RequestMetrics] = []

    def generate(batch, clock=None):
        width = max(len(r.prompt_token_ids) for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt_token_ids) :] = torch.tensor(r.prompt_token_ids)
            mask[i, width - len(r.prompt_token_ids) :] = 1
        n = max(r.max_tokens for r in batch)
        with torch.inference_mode():
            hf_model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
                stopping_criteria=StoppingCriteriaList([clock] if clock else []),
                **({"cache_implementation": cache_implementation} if cache_implementation else {}),
            )

    generate(reqs[:batch_size])  # warm-up at the timed batch's shape: a static cache compiles per shape
    bar = tqdm(total=len(reqs), desc=label, disable=not progress, leave=False)
    _sync(device)
    start = time.perf_counter()
    for b in range(0, len(reqs), batch_size):
        batch = reqs[b : b + batch_size]
        clock = _TokenClock(device)
        generate(batch, clock)
        for r in batch:  # static batch: each member's tokens appear with the batch's steps
            t = clock.times[: r.max_tokens]
            itl = [y - x for x, y in zip(t, t[1:])]
            tpot = (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else 0.0
            metrics.append(
                RequestMetrics(t[0] - start, tpot, itl, t[-1] - start, 0, len(r.prompt_token_ids), len(t))
            )
        bar.update(len(batch))
    duration = time.perf_counter() - start
    bar.close()
    return RunResult(label, metrics, duration)
