"""Chapter 8: the server's /metrics, in Prometheus' text format, named as vLLM names its own.

Gauges are read from the engine on its loop thread (AsyncEngine.snapshot); counters and histograms
are updated there when a request finishes or is aborted, and rendered on the event loop, so one lock
guards them. vLLM's names with a `minillm:` prefix:

    minillm:num_requests_running       requests holding KV memory (admitted, not finished)
    minillm:num_requests_waiting       requests queued for admission
    minillm:kv_cache_usage_perc        fraction of KV blocks in use (1 = full); blocks that only the
                                       prefix cache holds count as free, since admission evicts them
    minillm:prefix_cache_queries_total / minillm:prefix_cache_hits_total   prompt tokens looked up /
                                       found cached at admission; minillm:prefix_cache_hit_rate is their ratio
    minillm:time_to_first_token_seconds, minillm:time_per_output_token_seconds (each gap between two
                                       output tokens), minillm:e2e_request_latency_seconds   histograms
    minillm:request_success_total{finished_reason}, minillm:prompt_tokens_total,
    minillm:generation_tokens_total, minillm:num_aborted_requests_total, minillm:num_preemptions_total

Checked by: pytest tests/test_serve.py -k metrics.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter

from minillm.request import RequestOutput

# vLLM's bucket edges (seconds): fine where a healthy server lives, coarse in the tail
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


class Histogram:
    """Cumulative-bucket histogram as Prometheus exposes it: per-edge counts, a sum and a count."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]):
        self.name, self.doc, self.buckets = name, doc, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, labels: str) -> list[str]:
        lines = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for edge, n in zip((*self.buckets, "+Inf"), self.counts):
            cumulative += n
            lines.append(f'{self.name}_bucket{{{labels},le="{edge}"}} {cumulative}')
        lines += [f"{self.name}_sum{{{labels}}} {self.sum}", f"{self.name}_count{{{labels}}} {self.count}"]
        return lines


class ServerMetrics:
    def __init__(self, model_name: str):
        self.labels = f'model_name="{model_name}"'
        self._lock = threading.Lock()
        self.ttft = Histogram(
            "minillm:time_to_first_token_seconds", "Time to first token, from arrival.", TTFT_BUCKETS
        )
        self.tpot = Histogram(
            "minillm:time_per_output_token_seconds", "Gap between consecutive output tokens.", TPOT_BUCKETS
        )
        self.e2e = Histogram("minillm:e2e_request_latency_seconds", "Arrival to last token.", E2E_BUCKETS)
        self.finished: Counter[str] = Counter()  # finish reason -> requests
        self.num_aborted = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    # -- updated on the engine loop thread --------------------------------------------------------------
    def on_finish(self, out: RequestOutput) -> None:
        m = out.metrics
        with self._lock:
            self.finished[out.finish_reason] += 1
            self.prompt_tokens += len(out.prompt_token_ids)
            self.generation_tokens += len(out.token_ids)
            if m is not None:
                self.ttft.observe(m.ttft)
                for gap in m.itl:
                    self.tpot.observe(gap)
                self.e2e.observe(m.e2e)

    def on_abort(self) -> None:
        with self._lock:
            self.num_aborted += 1

    @staticmethod
    def gauges(engine, num_live: int) -> dict:
        """What the engine holds right now; call on the engine loop thread only."""
        scheduler = engine.scheduler
        num_waiting = len(scheduler.waiting)
        out = {
            "num_requests_running": max(0, num_live - num_waiting),
            "num_requests_waiting": num_waiting,
            "kv_cache_usage_perc": kv_cache_usage(engine),
            "num_preemptions": getattr(scheduler, "num_preemptions", 0),
            "prefix_cache_queries": 0,
            "prefix_cache_hits": 0,
        }
        manager = getattr(engine.kv, "manager", None)
        if manager is not None:
            out["prefix_cache_queries"] = manager.num_queried_tokens
            out["prefix_cache_hits"] = manager.num_hit_tokens
        return out

    # -- rendered on the event loop ---------------------------------------------------------------------
    def render(self, gauges: dict) -> str:
        """The Prometheus text exposition of everything above."""
        queries, hits = gauges["prefix_cache_queries"], gauges["prefix_cache_hits"]
        with self._lock:
            scalars = [  # (name, type, help, value)
                ("num_requests_running", "gauge", "Requests admitted and not finished.", gauges["num_requests_running"]),
                ("num_requests_waiting", "gauge", "Requests queued for admission.", gauges["num_requests_waiting"]),
                ("kv_cache_usage_perc", "gauge", "Fraction of KV blocks in use (1 = full).", gauges["kv_cache_usage_perc"]),
                ("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", queries),
                ("prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", hits),
                ("prefix_cache_hit_rate", "gauge", "prefix_cache_hits / prefix_cache_queries.", hits / queries if queries else 0.0),
                ("num_preemptions_total", "counter", "Requests preempted (recomputed later).", gauges["num_preemptions"]),
                ("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", self.prompt_tokens),
                ("generation_tokens_total", "counter", "Output tokens of finished requests.", self.generation_tokens),
                ("num_aborted_requests_total", "counter", "Requests aborted before they finished.", self.num_aborted),
            ]  # fmt: skip
            lines: list[str] = []
            for name, kind, doc, value in scalars:
                lines += [f"# HELP minillm:{name} {doc}", f"# TYPE minillm:{name} {kind}"]
                lines.append(f"minillm:{name}{{{self.labels}}} {value}")
            name = "minillm:request_success_total"
            lines += [f"# HELP {name} Finished requests by finish reason.", f"# TYPE {name} counter"]
            for reason in sorted(set(self.finished) | {"stop", "length"}):
                lines.append(f'{name}{{{self.labels},finished_reason="{reason}"}} {self.finished[reason]}')
            for hist in (self.ttft, self.tpot, self.e2e):
                lines += hist.render(self.labels)
        return "\n".join(lines) + "\n"


def kv_cache_usage(engine) -> float:
    """Fraction of the KV pool that requests hold. Paged: blocks neither free nor evictable from the
    prefix cache; contiguous (stage naive): rows reserved by the current batch."""
    kv = engine.kv
    if kv is None:
        return 0.0
    manager = getattr(kv, "manager", None)
    if manager is None:
        _, reserved, total = kv.usage(engine.scheduler.seqs_holding_kv())
        return reserved / total if total else 0.0
    available = getattr(manager, "num_available_blocks", manager.num_free_blocks)
    return 1.0 - available / manager.num_blocks
