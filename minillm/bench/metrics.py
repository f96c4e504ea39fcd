"""Aggregate per-request metrics the way `vllm bench serve` reports them: TTFT, TPOT, ITL and E2EL
(mean, median, p99, in milliseconds) and request / token throughput over the run's wall time."""

from __future__ import annotations

import statistics

from minillm.request import RequestMetrics


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(metrics: list[RequestMetrics], duration: float) -> dict:
    out: dict = {"num_requests": len(metrics), "duration_s": duration}
    series = {
        "ttft": [m.ttft for m in metrics],
        "tpot": [m.tpot for m in metrics if m.num_output_tokens > 1],
        "itl": [x for m in metrics for x in m.itl],
        "e2el": [m.e2e for m in metrics],
    }
    for name, xs in series.items():
        ms = [x * 1000 for x in xs]
        out[f"mean_{name}_ms"] = statistics.fmean(ms) if ms else float("nan")
        out[f"median_{name}_ms"] = percentile(ms, 50)
        out[f"p99_{name}_ms"] = percentile(ms, 99)
    n_in = sum(m.num_prompt_tokens for m in metrics)
    n_out = sum(m.num_output_tokens for m in metrics)
    out.update(
        total_input_tokens=n_in,
        total_output_tokens=n_out,
        num_cached_tokens=sum(m.num_cached_tokens for m in metrics),
        request_throughput=len(metrics) / duration,
        output_throughput=n_out / duration,
        total_token_throughput=(n_in + n_out) / duration,
    )
    return out
