"""Chapter 8: the serving benchmark, a client for any OpenAI-compatible server (as `vllm bench serve`).

    minillm bench serve --base-url http://127.0.0.1:8000 --num-prompts 200 --request-rate 4
    minillm bench serve --base-url URL --model NAME --dataset jsonl --dataset-path reqs.jsonl --request-rate inf
    minillm bench serve --base-url URL --sweep --request-rates 1,2,4,8,inf --goodput ttft:1000 tpot:50
    minillm bench serve --stages paged,radix,unified --sweep     # starts `minillm serve` per stage itself

Requests go out as a Poisson process of --request-rate per second (gamma intervals with shape
--burstiness: 1 is Poisson, below 1 burstier), at most --max-concurrency in flight, each a streamed
/v1/completions call with `stream_options.include_usage`. The client times every streamed chunk:

    TTFT   send -> first chunk with text              ITL   gap between chunks with text
    TPOT   (E2EL - TTFT) / (output tokens - 1)         E2EL  send -> last chunk
    request / output / total token throughput over the run's wall time (first send -> last answer);
    goodput: requests per second that met every SLO given (--goodput ttft:MS tpot:MS e2el:MS)

Output token counts come from the server's usage chunk, so a chunk holding several tokens (a server
that merges deltas for a slow reader) still counts them all; ITL then sees one gap for them, as in vLLM.
Prompts: `random` draws token ids (as vLLM's random dataset) so input lengths are exact and the
server's tokenizer does not matter; `jsonl` reads {"prompt": text or ids, "max_tokens": N} per line.

Checked by: pytest tests/test_serve_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from minillm.bench.metrics import percentile


@dataclass
class ServeRequest:
    prompt: str | list[int]
    max_tokens: int


@dataclass
class RequestResult:
    success: bool = False
    error: str = ""
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0  # seconds
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0  # E2EL, seconds
    text: str = ""
    send_time: float = 0.0  # seconds after the run started


# -- workloads ------------------------------------------------------------------------------------------------
def random_requests(
    num_prompts: int,
    input_len: int,
    output_len: int,
    vocab_size: int,
    range_ratio: float = 0.0,
    seed: int = 0,
) -> list[ServeRequest]:
    """Token-id prompts of lengths uniform in [(1-r)x, (1+r)x] (ids from 16 up: past special tokens)."""
    from minillm.bench.workloads import random_lengths

    w = random_lengths(num_prompts, input_len, output_len, vocab_size, range_ratio=range_ratio, seed=seed)
    return [ServeRequest(r.prompt_token_ids, r.max_tokens) for r in w.requests]


def jsonl_requests(path: str | Path, num_prompts: int | None = None) -> list[ServeRequest]:
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        prompt = row.get("prompt", row.get("prompt_token_ids"))
        if prompt is None or "max_tokens" not in row:
            raise ValueError(
                f"{path}:{i + 1}: each line needs 'prompt' (or 'prompt_token_ids') and 'max_tokens'"
            )
        out.append(ServeRequest(prompt, int(row["max_tokens"])))
    return out[:num_prompts] if num_prompts else out


def send_times(num: int, request_rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """When each request goes out, in seconds from the start: gamma-distributed gaps with mean
    1/request_rate (shape 1: a Poisson process); all at 0 for an infinite rate."""
    if math.isinf(request_rate):
        return [0.0] * num
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(num):
        t += rng.gammavariate(burstiness, 1.0 / (request_rate * burstiness))
        out.append(t)
    return out


# -- one request -------------------------------------------------------------------------------------------
async def send_completion(
    http: httpx.AsyncClient, url: str, model: str, req: ServeRequest, extra: dict, start: float
) -> RequestResult:
    """One streamed completion, timed chunk by chunk."""
    body = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    res = RequestResult(prompt_len=len(req.prompt) if isinstance(req.prompt, list) else 0)
    sent = time.perf_counter()
    res.send_time = sent - start
    last, seen_token = sent, False
    try:
        async with http.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:300]}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = str(chunk["error"])
                    return res
                now = time.perf_counter()
                if chunk.get("choices"):  # a token's chunk, timed even when its text is empty (as vLLM's)
                    if not seen_token:
                        res.ttft, seen_token = now - sent, True
                    else:
                        res.itl.append(now - last)
                    last = now
                    res.text += "".join(c.get("text") or "" for c in chunk["choices"])
                if chunk.get("usage"):
                    res.output_tokens = chunk["usage"]["completion_tokens"]
                    res.prompt_len = chunk["usage"]["prompt_tokens"]
        res.latency = last - sent
        res.success = True
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        res.error = f"{type(err).__name__}: {err}"
    return res


# -- a run ----------------------------------------------------------------------------------------------------
async def run_benchmark(
    base_url: str,
    model: str,
    requests: list[ServeRequest],
    *,
    request_rate: float = math.inf,
    max_concurrency: int | None = None,
    burstiness: float = 1.0,
    seed: int = 0,
    ignore_eos: bool = True,
    api_key: str | None = None,
    goodput: dict[str, float] | None = None,
    progress: bool = True,
) -> dict:
    """Send every request at its time and aggregate: returns metrics (vLLM's keys) plus "results"."""
    from tqdm import tqdm

    url = base_url.rstrip("/") + "/v1/completions"
    extra = {"ignore_eos": True} if ignore_eos else {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(
        max_connections=max_concurrency or len(requests) or 1, max_keepalive_connections=None
    )
    times = send_times(len(requests), request_rate, burstiness, seed)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    bar = tqdm(total=len(requests), desc=f"rate {request_rate:g}", disable=not progress, leave=False)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits, headers=headers) as http:
        start = time.perf_counter()

        async def one(req: ServeRequest, at: float) -> RequestResult:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            if gate is None:
                res = await send_completion(http, url, model, req, extra, start)
            else:
                async with gate:
                    res = await send_completion(http, url, model, req, extra, start)
            bar.update(1)
            return res

        results = await asyncio.gather(*(one(r, t) for r, t in zip(requests, times)))
        duration = time.perf_counter() - start
    bar.close()
    out = calculate_metrics(results, duration, goodput or {})
    out.update(
        request_rate=request_rate,
        burstiness=burstiness,
        max_concurrency=max_concurrency,
        results=[asdict(r) for r in results],
    )
    return out


def calculate_metrics(results: list[RequestResult], duration: float, goodput: dict[str, float]) -> dict:
    """vLLM bench serve's aggregates (milliseconds for latencies, per second for throughputs)."""
    ok = [r for r in results if r.success]
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    series = {
        "ttft": [r.ttft for r in ok],
        "tpot": tpots,
        "itl": [x for r in ok for x in r.itl],
        "e2el": [r.latency for r in ok],
    }
    n_in = sum(r.prompt_len for r in ok)
    n_out = sum(r.output_tokens for r in ok)
    m: dict = {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.success})[:5],
        "duration": duration,
        "total_input_tokens": n_in,
        "total_output_tokens": n_out,
        "request_throughput": len(ok) / duration,
        "output_throughput": n_out / duration,
        "total_token_throughput": (n_in + n_out) / duration,
    }
    if goodput:
        good = 0
        for r in ok:
            tpot = (r.latency - r.ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
            got = {"ttft": r.ttft, "tpot": tpot, "e2el": r.latency}
            good += all(got[k] * 1000 <= slo for k, slo in goodput.items())
        m["request_goodput"] = good / duration
        m["goodput_slos_ms"] = dict(goodput)
    for name, xs in series.items():
        ms = [x * 1000 for x in xs]
        m[f"mean_{name}_ms"] = statistics.fmean(ms) if ms else float("nan")
        m[f"median_{name}_ms"] = percentile(ms, 50)
        m[f"std_{name}_ms"] = statistics.pstdev(ms) if ms else float("nan")
        m[f"p99_{name}_ms"] = percentile(ms, 99)
    return m


def parse_goodput(items: list[str] | None) -> dict[str, float]:
    """["ttft:1000", "tpot:50"] -> {"ttft": 1000.0, "tpot": 50.0} (milliseconds)."""
    out = {}
    for item in items or []:
        key, _, value = item.partition(":")
        if key not in ("ttft", "tpot", "e2el") or not value:
            raise ValueError(f"--goodput: {item!r} is not ttft:MS, tpot:MS or e2el:MS")
        out[key] = float(value)
    return out


def parse_rates(text: str) -> list[float]:
    rates = [math.inf if r.strip() == "inf" else float(r) for r in text.split(",") if r.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--request-rates: {text!r} must list rates > 0 (or inf)")
    return rates


def summary_line(m: dict) -> str:
    return (
        f"rate {m['request_rate']:g}/s: {m['completed']} ok, {m['failed']} failed, "
        f"{m['request_throughput']:.2f} req/s, {m['output_throughput']:.1f} out tok/s, "
        f"TTFT p50/p99 {m['median_ttft_ms']:.1f}/{m['p99_ttft_ms']:.1f} ms, "
        f"TPOT p50/p99 {m['median_tpot_ms']:.2f}/{m['p99_tpot_ms']:.2f} ms"
    )


# -- the command ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillm bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--base-url", help="a running server; without it, --stages starts `minillm serve` per stage"
    )
    p.add_argument("--model", help="the model name the server serves (default: the first of /v1/models)")
    p.add_argument("--api-key")
    p.add_argument("--dataset", choices=["random", "jsonl"], default="random")
    p.add_argument("--dataset-path", help="for --dataset jsonl")
    p.add_argument("--num-prompts", type=int, default=100)
    p.add_argument("--random-input-len", type=int, default=128)
    p.add_argument("--random-output-len", type=int, default=64)
    p.add_argument("--random-range-ratio", type=float, default=0.0)
    p.add_argument("--random-prefix-len", type=int, default=0, help="ids every prompt starts with (shared)")
    p.add_argument("--vocab-size", type=int, help="random prompts' ids are below this (default: the model's)")
    p.add_argument("--request-rate", default="inf", help="requests per second (Poisson), or inf: all at once")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps; 1 = Poisson")
    p.add_argument("--max-concurrency", type=int, help="most requests in flight")
    p.add_argument("--goodput", nargs="+", metavar="KEY:MS", help="SLOs, e.g. ttft:1000 tpot:50")
    p.add_argument(
        "--no-ignore-eos", action="store_true", help="do not send ignore_eos (an OpenAI-only server)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", action="store_true", help="run each of --request-rates")
    p.add_argument("--request-rates", default="1,2,4,8,inf")
    p.add_argument(
        "--stages",
        default="paged,radix,unified",
        help="without --base-url: stages to serve, comma-separated; a stage may carry serve flags of its own"
        ' ("triton --async-scheduling")',
    )
    p.add_argument("--server-model", help="without --base-url: the checkpoint to serve (default: embedded)")
    p.add_argument("--load-format", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--server-args", default="", help="without --base-url: more `minillm serve` flags")
    p.add_argument("--out", default="results/serve", help="folder for JSON, markdown and PNG")
    p.add_argument("--no-progress", action="store_true")
    return p


def first_model(base_url: str, api_key: str | None) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()["data"][0]["id"]


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    try:
        _main(args)
    except ValueError as err:
        print(f"minillm bench serve: error: {err}", file=sys.stderr)
        sys.exit(2)


def _main(args) -> None:
    from minillm.bench import ch08

    goodput = parse_goodput(args.goodput)
    rates = parse_rates(args.request_rates) if args.sweep else parse_rates(args.request_rate)
    if args.dataset == "jsonl":
        if not args.dataset_path:
            raise ValueError("--dataset jsonl needs --dataset-path")
        requests = jsonl_requests(args.dataset_path, args.num_prompts)
        workload = {"dataset": "jsonl", "path": args.dataset_path, "num_prompts": len(requests)}
    else:
        requests = None  # random: made once the vocabulary is known
        workload = {
            "dataset": "random",
            "num_prompts": args.num_prompts,
            "input_len": args.random_input_len,
            "output_len": args.random_output_len,
            "range_ratio": args.random_range_ratio,
            "prefix_len": args.random_prefix_len,
            "seed": args.seed,
        }

    def make_requests(vocab_size: int) -> list[ServeRequest]:
        if requests is not None:
            return requests
        n, i, o, r = args.num_prompts, args.random_input_len, args.random_output_len, args.random_range_ratio
        return ch08.with_prefix(
            random_requests(n, i, o, vocab_size, r, args.seed), args.random_prefix_len, vocab_size
        )

    options = dict(
        burstiness=args.burstiness,
        max_concurrency=args.max_concurrency,
        seed=args.seed,
        ignore_eos=not args.no_ignore_eos,
        api_key=args.api_key,
        goodput=goodput,
        progress=not args.no_progress,
    )
    from minillm.bench.common import Bench
    from minillm.config import DEFAULT_MODEL

    label = args.model if args.base_url else args.server_model
    with Bench(8, label or DEFAULT_MODEL, device=args.device, out=args.out) as bench:  # records the load
        if args.base_url:
            model = args.model or first_model(args.base_url, args.api_key)
            vocab = args.vocab_size or ch08.vocab_size(args.server_model)
            runs = {model: ch08.sweep(args.base_url, model, make_requests(vocab), rates, **options)}
        else:
            vocab = args.vocab_size or ch08.vocab_size(args.server_model, args.load_format)
            server_args = [
                "--device",
                args.device,
                "--load-format",
                args.load_format,
                *args.server_args.split(),
            ]
            runs = ch08.sweep_stages(
                [label.strip() for label in args.stages.split(",")],
                make_requests(vocab),
                rates,
                model=args.server_model,
                server_args=server_args,
                **options,
            )
        ch08.publish_sweep(runs, workload, args.out, device=args.device, bench=bench)
