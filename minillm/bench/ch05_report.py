"""Chapter 5 benchmark output: the main table's columns, the finished rows (build and replay numbers,
ratios, one row per peer), the header, the schema table and the plot.

Used by minillm/bench/ch05.py (minillm bench --chapter 5); checked by pytest tests/test_bench.py.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import torch

from minillm.bench.ch05_peers import peer_compile
from minillm.bench.ch05_schemas import MIX, PROMPTS
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.constrained.guide import STRATEGIES

if TYPE_CHECKING:
    from minillm.bench.ch05 import Session
    from minillm.bench.common import Bench

COLUMNS = [  # the main table: one row per (workload, strategy), then per (workload, peer)
    ("workload", "workload", ""),
    ("strategy", "strategy", ""),
    ("build_ms_per_schema", "build ms/schema", ".1f"),
    ("mask_us_per_token", "host us/tok (engine)", ".1f"),
    ("replay_median_us", "mask us/tok (replay p50)", ".1f"),
    ("constraint_ms_per_doc", "host ms/doc", ".2f"),
    ("constraint_pct_of_run", "% of run", ".1f"),
    ("passes_per_output", "passes/output", ".1f"),
    ("output_tokens_per_request", "out tok/req", ".1f"),
    ("forced_pct", "forced %", ".1f"),
    ("median_ttft_ms", "TTFT p50 ms", ".1f"),
    ("median_e2el_ms", "E2EL p50 ms", ".1f"),
    ("p99_e2el_ms", "E2EL p99 ms", ".1f"),
    ("output_throughput", "out tok/s", ".1f"),
    ("x_indexed", "docs/s x indexed", ".2f"),
    ("x_naive", "docs/s x naive", ".2f"),
    ("valid_pct", "valid %", ".1f"),
    ("finish", "finish", ""),
]


def peer_line(peers: dict, missing: dict) -> str:
    """The header's sentence on the peers: versions and layouts, errors and refusals, what is missing."""
    line = (
        "Peers (CPU, same tokenizer, schemas and replayed tokens; mask = fill the library's bitmask): "
        + "; ".join(f"{k} {v['version']} ({v['layout']})" for k, v in peers.items())
        if peers
        else "Peers: none installed"
    )
    for k, v in peers.items():
        refused = sum(r["refused_sequences"] for r in v["replay"].values())
        if v["errors"] or refused:
            line += f"; {k}: errors on {', '.join(v['errors']) or 'none'}, {refused} replays refused"
    if missing:
        line += f"; not measured: {', '.join(missing)}"
    return line


def schema_table(per_schema: dict, peers: dict, found) -> str:
    """One row per schema: regex size, DFA and index states, build times, the peers' compile times."""
    return markdown_table(
        [{"schema": k, **v, **peer_compile(peers, k)} for k, v in per_schema.items()],
        [
            ("schema", "schema", ""),
            ("regex_chars", "regex chars", "d"),
            ("dfa_states", "DFA states", "d"),
            ("index_states", "index states", "d"),
            ("regex_to_dfa_ms", "regex->DFA ms", ".1f"),
            ("indexed_index_ms", "token index ms", ".1f"),
            ("compressed_index_ms", "index + chains ms", ".1f"),
            *[(f"peer_{c.name}", f"{c.name} ms", ".1f") for c in found],
        ],
    )


def header_text(bench: Bench, session: Session, token_identical, same_text, peers, found, missing) -> str:
    """The result's header: title, workloads, method, and the schema table."""
    s, cuda, setup, vocab = session.scale, session.cuda, session.setup, session.vocab
    n, max_tokens, validator = s["num_requests"], session.max_tokens, session.validator
    dt = session.llm.config.torch_dtype
    peers_sentence = peer_line(peers, missing)
    table = schema_table(session.per_schema, peers, found)
    header = (
        bench.title(dt)
        + f"\nworkloads: {n} requests each, submitted together (seed {s['seed']}): character card (one schema,"
        f" {len(PROMPTS['card'])} prompts) and json-schema mix ({', '.join(MIX)} in turn, 2 prompts each)."
        f" Greedy, max_tokens {max_tokens}; every string has a maxLength and every number is an integer"
        " range, so documents stay bounded under random weights. One engine,"
        " stage fsm (unified scheduler, radix cache); strategies run in this order: naive, indexed,"
        " compressed, then unconstrained (max_tokens = indexed's median output length, EOS ignored)."
        " Before each timed run an untimed warm-up compiles the schemas (one request each"
        + (
            "; on CUDA also a whole untimed pass: indexed's before naive, whose shapes are the same, and"
            " compressed's and unconstrained's own"
            if cuda
            else ""
        )
        + "), so build time is not in TTFT: build ms/schema is measured apart (regex -> DFA + index, the"
        f" vocabulary and its trie built once: {setup['vocabulary_ms']:.1f} + {setup['trie_ms']:.1f} ms;"
        " naive builds only the DFA). host us/tok (engine) = StepStats.constraint_s (masks, guide updates,"
        " jumps) / sampled tokens (one per forward pass); host ms/doc and % of run: the same total per document and as a share of the"
        " run. mask us/tok (replay p50) = CPU median of one mask (the state's allowed ids, then a"
        f" {len(vocab)}-token boolean mask) per token, replaying indexed's first {s['replay_requests']} outputs"
        " twice and timing the second pass (naive: one pass, at most"
        f" {s['replay_naive_masks']} masks); compressed's masks are indexed's: it saves masks by sampling"
        " fewer tokens. docs/s x = the other's run time / this one's (the same documents;"
        " tokens/s differ as jump-forward re-tokenizes). valid % ="
        f" {validator.method} over outputs that finished 'stop' (unconstrained: a valid document at the"
        " start of the text). naive and indexed token-identical:"
        f" {token_identical}"
        f"{'' if dt == torch.float32 else ' (bf16: a near-tie can flip in another run)'}; compressed's text equals indexed's in"
        f" {', '.join(f'{v:.0f}% ({k})' for k, v in same_text.items())} of documents: jump-forward feeds forced"
        " text in the tokenizer's own spelling, where greedy decoding under a mask may spell it differently,"
        f" so the model goes on from another context.\n{peers_sentence}.\n\n" + table
    )
    return header


def finish_rows(rows, workloads, per_schema, replays, peers) -> list[dict]:
    """Add build times, replayed mask times and the ratios; append one row per peer and workload."""
    out = []
    for wname, reqs in workloads.items():
        names = sorted({k for k, _ in reqs})
        mine = [r for r in rows if r["workload"] == wname]
        by = {r["strategy"]: r for r in mine}
        for r in mine:
            if r["strategy"] in STRATEGIES:
                r["build_ms_per_schema"] = statistics.fmean(
                    per_schema[k][f"{r['strategy']}_build_ms"] for k in names
                )
                rep = replays[f"{wname}/{r['strategy']}"]
                r["replay_median_us"] = rep["median_us"]
                r["replay"] = rep
            r["x_indexed"] = by["indexed"]["duration_s"] / r["duration_s"]
            r["x_naive"] = by["naive"]["duration_s"] / r["duration_s"]
            out.append(r)
        for name, p in peers.items():
            times = [p["compile_ms"][k] for k in names if k in p["compile_ms"]]
            rep = p.get("replay", {}).get(wname)
            out.append(
                {
                    "workload": wname,
                    "strategy": f"{name} (peer)",
                    "build_ms_per_schema": statistics.fmean(times) if times else None,
                    "replay_median_us": rep["median_us"] if rep else None,
                    "replay": rep,
                    "peer": True,
                }
            )
    return out


def plot(rows, path, title: str) -> None:
    plt = pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    runs = ["naive", "indexed", "compressed", "unconstrained"]
    colors = {"naive": "#c44", "indexed": "#48c", "compressed": "#4a6", "unconstrained": "#888"}
    peer_colors = ["#c84", "#84c", "#4cc"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.6))
    at = {(r["workload"], r["strategy"]): r for r in rows}
    width = 0.8 / len(runs)
    for i, name in enumerate(runs):
        x = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(workloads))]
        ax1.bar(
            x, [at[w, name]["passes_per_output"] for w in workloads], width, color=colors[name], label=name
        )
        ax2.bar(x, [at[w, name]["median_e2el_ms"] for w in workloads], width, color=colors[name], label=name)
    masked = list(dict.fromkeys(r["strategy"] for r in rows if r.get("replay_median_us") is not None))
    width = 0.8 / len(masked)
    for i, name in enumerate(masked):
        x = [j + (i - (len(masked) - 1) / 2) * width for j in range(len(workloads))]
        color = colors.get(name) or peer_colors[(i - len(STRATEGIES)) % len(peer_colors)]
        ys = [(at.get((w, name)) or {}).get("replay_median_us") for w in workloads]
        ax3.bar(x, [y or 0 for y in ys], width, color=color, label=name)
        engine = [(at.get((w, name)) or {}).get("mask_us_per_token") for w in workloads]
        pts = [(xi, e) for xi, e in zip(x, engine) if e]
        if pts:
            ax3.plot([p[0] for p in pts], [p[1] for p in pts], "k_", ms=12, mew=2)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(range(len(workloads)), workloads)
    ax1.set(ylabel="forward passes per output", title="forward passes per document")
    ax2.set(ylabel="E2EL p50 (ms)", title="end-to-end latency, all requests at once")
    ax3.set_yscale("log")
    ax3.set(ylabel="us per token (log)", title="mask per token: replay p50 (bars), engine host time (-)")
    ax1.legend(fontsize=8)
    ax3.set_ylim(top=ax3.get_ylim()[1] * 30)  # room for the legend above the bars
    ax3.legend(fontsize=7, ncol=3, loc="upper center")
    save_figure(fig, path, title)
