"""Benchmark workloads: lists of requests with known token lengths, reproducible from a seed.

Prompts are random token ids (as `vllm bench serve --dataset-name random`) and requests ignore EOS,
so every run feeds and produces exactly the lengths the workload names.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class BenchRequest:
    prompt_token_ids: list[int]
    max_tokens: int
    arrival_time: float = 0.0  # seconds after the run starts (0: all at once)


@dataclass
class Workload:
    name: str
    requests: list[BenchRequest]
    params: dict = field(default_factory=dict)  # how it was made, for the results JSON

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(r.prompt_token_ids) for r in self.requests)

    @property
    def num_output_tokens(self) -> int:
        return sum(r.max_tokens for r in self.requests)

    def describe(self) -> dict:
        return {"name": self.name, "num_requests": len(self.requests), **self.params}


def _random_ids(rng: random.Random, n: int, vocab_size: int) -> list[int]:
    # skip the first ids, where tokenizers keep their special tokens
    return [rng.randrange(16, vocab_size) for _ in range(n)]


def fixed(num_requests: int, input_len: int, output_len: int, vocab_size: int, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    reqs = [BenchRequest(_random_ids(rng, input_len, vocab_size), output_len) for _ in range(num_requests)]
    params = dict(kind="fixed", input_len=input_len, output_len=output_len, seed=seed)
    return Workload(f"fixed-{num_requests}x{input_len}+{output_len}", reqs, params)


def random_lengths(
    num_requests: int,
    input_len: int,
    output_len: int,
    vocab_size: int,
    *,
    dist: str = "uniform",
    range_ratio: float = 0.5,
    sigma: float = 0.6,
    max_len: int | None = None,
    seed: int = 0,
) -> Workload:
    """Lengths around input_len/output_len: uniform in [(1-r)x, (1+r)x], or lognormal with median x."""
    if dist not in ("uniform", "lognormal"):
        raise ValueError(f"dist must be 'uniform' or 'lognormal', got {dist!r}")
    rng = random.Random(seed)

    def draw(x: int) -> int:
        if dist == "uniform":
            n = rng.randint(max(1, int(x * (1 - range_ratio))), max(1, int(x * (1 + range_ratio))))
        else:
            n = max(1, round(rng.lognormvariate(0.0, sigma) * x))
        return min(n, max_len) if max_len else n

    reqs = []
    for _ in range(num_requests):
        n_in = draw(input_len)
        n_out = draw(output_len)
        if max_len:
            n_in, n_out = min(n_in, max_len - 1), max(1, min(n_out, max_len - min(n_in, max_len - 1)))
        reqs.append(BenchRequest(_random_ids(rng, n_in, vocab_size), n_out))
    params = dict(
        kind=f"random-{dist}",
        input_len=input_len,
        output_len=output_len,
        seed=seed,
        range_ratio=range_ratio if dist == "uniform" else None,
        sigma=sigma if dist == "lognormal" else None,
    )
    return Workload(f"{dist}-{num_requests}", reqs, params)


def from_jsonl(path: str | Path, tokenizer=None) -> Workload:
    """One request per line: {"prompt": "..."} or {"prompt_token_ids": [...]}, and "max_tokens"."""
    reqs = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "prompt_token_ids" in row:
            ids = row["prompt_token_ids"]
        elif "prompt" in row:
            if tokenizer is None:
                raise ValueError(f"{path}:{i + 1}: a text prompt needs a tokenizer")
            ids = tokenizer.encode(row["prompt"])
        else:
            raise ValueError(f"{path}:{i + 1}: needs 'prompt' or 'prompt_token_ids'")
        if "max_tokens" not in row:
            raise ValueError(f"{path}:{i + 1}: needs 'max_tokens'")
        reqs.append(BenchRequest(ids, int(row["max_tokens"]), float(row.get("arrival_time", 0.0))))
    return Workload(Path(path).stem, reqs, dict(kind="jsonl", path=str(path)))


def to_jsonl(workload: Workload, path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(asdict(r)) + "\n" for r in workload.requests))


def poisson_with_long_prompts(
    num_short: int,
    short_input_len: int,
    short_output_len: int,
    request_rate: float,
    num_long: int,
    long_input_len: tuple[int, int],
    long_output_len: int,
    long_period: float,
    vocab_size: int,
    *,
    range_ratio: float = 0.5,
    seed: int = 0,
) -> Workload:
    """Steady decode traffic with long prompts arriving periodically (chapter 4).

    Short requests (lengths uniform in [(1-r)x, (1+r)x]) arrive as a Poisson process of request_rate
    per second; num_long long-prompt requests (prompt length uniform in long_input_len) arrive at
    long_period / 2, then every long_period seconds. Requests are in arrival order; params["long"]
    lists the indices of the long ones."""
    rng = random.Random(seed)

    def draw(x: int) -> int:
        return rng.randint(max(1, int(x * (1 - range_ratio))), max(1, int(x * (1 + range_ratio))))

    reqs, t = [], 0.0
    for _ in range(num_short):
        t += rng.expovariate(request_rate)
        reqs.append(
            BenchRequest(_random_ids(rng, draw(short_input_len), vocab_size), draw(short_output_len), t)
        )
    longs = [
        BenchRequest(_random_ids(rng, rng.randint(*long_input_len), vocab_size), long_output_len, t)
        for t in ((k + 0.5) * long_period for k in range(num_long))
    ]
    reqs = sorted(reqs + longs, key=lambda r: r.arrival_time)
    params = dict(
        kind="poisson+long",
        short_input_len=short_input_len,
        short_output_len=short_output_len,
        range_ratio=range_ratio,
        request_rate=request_rate,
        long_input_len=list(long_input_len),
        long_output_len=long_output_len,
        long_period=long_period,
        seed=seed,
        long=[i for i, r in enumerate(reqs) if any(r is x for x in longs)],
    )
    return Workload(f"poisson-{num_short}+long-{num_long}", reqs, params)
