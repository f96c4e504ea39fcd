"""Chapter 5 benchmark: timing masks by replay. The outputs a run recorded go again, token by token,
through a guide (ours, or a peer library's matcher), timing one mask per token on the CPU; median_time
times builds.

Used by minillm/bench/ch05.py and ch05_peers.py (minillm bench --chapter 5); checked by pytest
tests/test_bench.py.
"""

from __future__ import annotations

import statistics
import time

import torch

from minillm.bench.metrics import percentile


def median_time(fn, repeats: int):
    """(median seconds over repeats, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _stats(ns: list[int]) -> dict:
    us = [x / 1000 for x in ns]
    return {
        "num_masks": len(us),
        "median_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us) if us else float("nan"),
    }


def replay(seqs, start, fill, advance, eos_ids, passes=("first", "second"), max_masks=None) -> dict:
    """seqs: [(schema, token ids)]. start(schema) -> a fresh matcher; fill(matcher) builds one mask
    (timed); advance(matcher, token) -> False if it refuses the token. Two passes: lazy per-state work
    (llguidance's lexer, our per-state mask cache) lands in the first; the second is the headline.
    max_masks stops a pass after that many masks (whole sequences)."""
    out = {}
    for phase in passes:
        ns, refused = [], 0
        for schema, ids in seqs:
            if max_masks is not None and len(ns) >= max_masks:
                break
            m = start(schema)
            for tok in ids:
                t0 = time.perf_counter_ns()
                fill(m)
                ns.append(time.perf_counter_ns() - t0)
                if tok in eos_ids:
                    break
                if not advance(m, tok):
                    refused += 1
                    break
        out[phase] = {**_stats(ns), "refused_sequences": refused}
    return {**out[passes[-1]], "passes": out}


def replay_ours(strategy: str, guides, vocab_size: int, seqs, eos_ids, naive_max_masks: int) -> dict:
    """A strategy's guides (the engine's own): the state's allowed ids as a tensor, then a
    vocabulary-wide boolean mask (what mask_logits builds per row; on the CPU here). naive caches
    nothing, so one pass, capped at naive_max_masks."""

    class Cursor:
        def __init__(self, guide):
            self.guide, self.state = guide, guide.initial_state

    def fill(c):
        ids = c.guide.allowed_ids(c.state, "cpu")
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[ids] = True

    def advance(c, tok):
        c.state = c.guide.next_state(c.state, tok)
        return c.state is not None

    kw = dict(passes=("first",), max_masks=naive_max_masks) if strategy == "naive" else {}
    return replay(seqs, lambda s: Cursor(guides[s]), fill, advance, eos_ids, **kw)
