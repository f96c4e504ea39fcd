"""Chapter 5 benchmark: what each way of constraining decoding costs, per token and per document.

Three strategies (minillm/constrained/guide.py) on one engine (stage fsm), same prompts and schemas:
  naive        walk the whole vocabulary through the DFA at every step (nothing to build)
  indexed      Outlines' token index: built once per schema, a step is a lookup (masks cached per state)
  compressed   the index + SGLang's compressed FSM: forced text (`", "house": "`) is appended at once by
               jump-forward and re-prefilled in one pass, instead of one forward pass per token
  unconstrained  the same prompts with no constraint, max_tokens = the median constrained output length
               (EOS ignored): the engine's speed with nothing to mask
Workloads: "character card" (one JSON Schema, a Hogwarts student) and "json-schema mix" (five schemas:
product, event with a date, user with optional fields, tool call, review), N requests submitted together.
Every string has a maxLength and every number is an integer range, so documents stay bounded even under
random dummy weights (an unbounded number is a digit run that only max_tokens ends).

Reported per (workload, strategy): build time per schema (regex -> DFA + index; measured apart on a
fresh vocabulary, so it is not in TTFT: an untimed warm-up compiles every schema first), the host time
spent on constraints per sampled token as the engine measured it (StepStats.constraint_s), the same
more precisely by an offline replay (the CPU median of one mask per token, replaying recorded outputs),
forward passes per output, output tokens, the forced-token fraction, TTFT / E2EL, output throughput and
documents per second against indexed and naive, and validity (json.loads + the DFA + jsonschema).
Optional peers (pip install -e '.[peers]': outlines-core, xgrammar, llguidance) are measured on the CPU
with the same tokenizer, schemas and replayed tokens: compile time and mask time per token.

Beside this file: ch05_schemas.py (schemas, prompts), ch05_replay.py (mask replay), ch05_peers.py (the
peers), ch05_report.py (tables, header, plot).

Run: minillm bench --chapter 5 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from minillm.bench.ch05_peers import available_peers, measure_peers
from minillm.bench.ch05_replay import median_time, replay_ours
from minillm.bench.ch05_report import COLUMNS, finish_rows, header_text, plot
from minillm.bench.ch05_schemas import SCHEMAS, make_workloads
from minillm.bench.common import Bench, warm_up
from minillm.bench.report import markdown_table
from minillm.bench.runner import RunResult
from minillm.constrained import regex as regex_module
from minillm.constrained.guide import STRATEGIES
from minillm.constrained.index import VocabTrie, Vocabulary
from minillm.constrained.json_schema import json_schema_to_regex
from minillm.model.loader import read_config
from minillm.request import SamplingParams

SCALES = {
    # The default model on a CPU: a step of 8 sequences is ~8 ms; a character card is ~130 tokens.
    "quick": dict(
        num_requests=8, max_tokens=192, build_repeats=1, replay_requests=8, replay_naive_masks=200, seed=0
    ),
    # Sized for one GPU call: qwen3-0.6b's eager step is host-bound (~20-60 ms), and a batch takes as many
    # steps as its longest output, so max_tokens bounds each run. Per workload: 5 runs of up to
    # max_tokens steps (indexed's shape warm-up, naive, indexed, unconstrained's warm-up and run) and 2
    # shorter compressed ones.
    "full": dict(
        num_requests=64, max_tokens=224, build_repeats=3, replay_requests=16, replay_naive_masks=800, seed=0
    ),
}


def fresh_dfa(pattern: str):
    """compile_regex past its lru_cache: the engine's warm-up would make later compiles free."""
    raw = getattr(regex_module._compile_cached, "__wrapped__", None)
    return raw(pattern, 20_000, 10.0) if raw is not None else regex_module.compile_regex(pattern)


def vocabulary(tokenizer, eos_ids) -> tuple[Vocabulary, dict]:
    """The vocabulary as the guides see it, and what a GuideFactory pays once per tokenizer for it and
    for its trie (not part of any schema's build time)."""
    t0 = time.perf_counter()
    vocab = Vocabulary.from_tokenizer(tokenizer, eos_ids)
    t1 = time.perf_counter()
    VocabTrie(vocab)
    return vocab, {"vocabulary_ms": 1000 * (t1 - t0), "trie_ms": 1000 * (time.perf_counter() - t1)}


def schema_info(regexes: dict[str, str], repeats: int) -> dict[str, dict]:
    """Per schema: regex length, DFA states and regex -> DFA time (median of repeats, uncached). The
    index part of the build is read from the engine's own guides (Guide.build_seconds) as the warm-up
    builds them on a fresh GuideFactory: GuideFactory.guide(regex) = regex -> DFA + make_guide."""
    out = {}
    for name, rx in regexes.items():
        s, dfa = median_time(lambda rx=rx: fresh_dfa(rx), repeats)
        out[name] = {"regex_chars": len(rx), "dfa_states": dfa.num_states, "regex_to_dfa_ms": 1000 * s}
    return out


def run_batch(llm, prompts, params, label: str, progress: bool):
    """Submit every request (prompts: token ids) at once and step until all finish. Returns (outputs in
    order, seconds, host seconds on constraints)."""
    engine = llm.engine
    engine.step_stats.clear()
    if engine.config.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    order = {}
    for i, (ids, sp) in enumerate(zip(prompts, params)):
        order[engine.add_request(ids, sp, arrival_time=start)] = i
    done = {}
    bar = tqdm(total=len(order), desc=label, disable=not progress, leave=False)
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[order[out.request_id]] = out
                bar.update(1)
    duration = time.perf_counter() - start
    bar.close()
    return [done[i] for i in range(len(order))], duration, sum(s.constraint_s for s in engine.step_stats)


class Validator:
    """json.loads + the schema's DFA + jsonschema (formats checked) when it is installed."""

    def __init__(self, regexes: dict[str, str]):
        self.dfas = {k: regex_module.compile_regex(rx) for k, rx in regexes.items()}
        try:
            from jsonschema import Draft202012Validator as V

            self.schemas = {k: V(SCHEMAS[k], format_checker=V.FORMAT_CHECKER) for k in regexes}
        except ImportError:
            self.schemas = None

    @property
    def method(self) -> str:
        return "json.loads + DFA" + (" + jsonschema" if self.schemas else " (jsonschema not installed)")

    def document(self, schema: str, text: str) -> bool:
        try:
            obj = json.loads(text)
        except ValueError:
            return False
        ok = self.dfas[schema].accepts(text)
        return ok and (self.schemas is None or self.schemas[schema].is_valid(obj))

    def leading_document(self, schema: str, text: str) -> bool:
        """Unconstrained text: does it start with a valid document (whatever follows)?"""
        body = text.lstrip()
        try:
            obj, end = json.JSONDecoder().raw_decode(body)
        except ValueError:
            return False
        return self.document(schema, json.dumps(obj)) and body[:end] == json.dumps(obj)


def run_row(workload, strategy, schemas, outputs, duration, constraint_s, validator) -> dict:
    ms = [o.metrics for o in outputs]
    n_out = sum(m.num_output_tokens for m in ms)
    steps = sum(m.num_steps for m in ms)  # prompts fit one step: one sampled token per forward pass
    finish = Counter(o.finish_reason for o in outputs)
    constrained = strategy != "unconstrained"
    if constrained:
        stopped = [(s, o) for s, o in zip(schemas, outputs) if o.finish_reason == "stop"]
        valid = [validator.document(s, o.text) for s, o in stopped]
    else:
        valid = [validator.leading_document(s, o.text) for s, o in zip(schemas, outputs)]
    return {
        "workload": workload,
        "strategy": strategy,
        **RunResult(strategy, ms, duration).summary(),
        "constraint_s": constraint_s,
        "mask_us_per_token": 1e6 * constraint_s / steps,
        "constraint_ms_per_doc": 1000 * constraint_s / len(ms),
        "constraint_pct_of_run": 100 * constraint_s / duration,
        "passes_per_output": steps / len(ms),
        "output_tokens_per_request": n_out / len(ms),
        "forced_pct": 100 * sum(m.num_forced_tokens for m in ms) / n_out,
        "valid_pct": 100 * sum(valid) / len(valid) if valid else None,
        "num_valid": sum(valid),
        "finish_reasons": dict(finish),
        "finish": " ".join(f"{k} {v}" for k, v in sorted(finish.items())),
    }


@dataclass
class Session:
    """What every run of chapter 5 shares: one engine, the prompts as token ids, the schemas' regexes and
    build numbers, the guides the engine built (replayed afterwards) and the validity checks."""

    llm: Any
    scale: dict
    encoded: dict[str, list[int]]  # prompt text -> token ids
    max_tokens: int
    regexes: dict[str, str]  # schema name -> json_schema_to_regex
    vocab: Vocabulary
    setup: dict  # vocabulary and trie build times, paid once per tokenizer
    per_schema: dict[str, dict]  # schema name -> regex size, DFA states, build times (filled per strategy)
    guides: dict[str, dict]  # strategy -> schema name -> the engine's own Guide, for the replay
    validator: Validator
    progress: bool
    cuda: bool


@dataclass
class WorkloadRuns:
    """One workload through every strategy and the unconstrained baseline."""

    rows: list[dict]
    per_request: dict[str, list[dict]]  # "workload/strategy" -> one record per request
    same_tokens: bool  # naive's outputs equal indexed's, token for token
    same_text_pct: float  # compressed's text equals indexed's in this % of documents
    replay_seqs: list[tuple[str, list[int]]]  # (schema, indexed's output ids), for the mask replay


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 5`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(5, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s = bench.scale(SCALES)
    workloads = make_workloads(s["num_requests"], s["seed"])
    session = open_session(bench, s, workloads)
    runs = {wname: run_workload(session, wname, reqs) for wname, reqs in workloads.items()}
    replay_seqs = {wname: r.replay_seqs for wname, r in runs.items()}
    replays = replay_strategies(session, replay_seqs)
    found, missing = available_peers()
    if missing:
        print(
            f"chapter 5 peers not measured: {', '.join(f'{k}: {v}' for k, v in missing.items())}"
            " (pip install -e '.[peers]')"
        )
    eos, tok = session.llm.engine.eos_token_ids, session.llm.tokenizer
    peers = measure_peers(
        found, session.vocab, tok.path, eos, replay_seqs, SCHEMAS, s["build_repeats"], session.progress
    )
    rows = finish_rows(
        [r for w in runs.values() for r in w.rows], workloads, session.per_schema, replays, peers
    )
    token_identical = all(r.same_tokens for r in runs.values())
    same_text = {wname: r.same_text_pct for wname, r in runs.items()}
    header = header_text(bench, session, token_identical, same_text, peers, found, missing)
    payload = {
        "scale": s,
        "max_tokens": session.max_tokens,
        "workload": {
            "requests": {k: [{"schema": a, "prompt": b} for a, b in w] for k, w in workloads.items()},
            "schemas": SCHEMAS,
            "regexes": session.regexes,
            "seed": s["seed"],
        },
        "config": {"engine": vars(session.llm.config), "strategy_order": [*STRATEGIES, "unconstrained"]},
        "build": {"setup": session.setup, "per_schema": session.per_schema},
        "replay": replays,
        "peers": peers,
        "peers_missing": missing,
        "replay_sequences": {
            w: [{"schema": k, "token_ids": ids} for k, ids in seqs] for w, seqs in replay_seqs.items()
        },
        "validity_method": session.validator.method,
        "token_identical": token_identical,  # naive vs indexed
        "compressed_same_text_pct": same_text,
        "aggregates": rows,
        "per_request": {k: v for r in runs.values() for k, v in r.per_request.items()},
    }
    record = bench.publish(payload, header, markdown_table(rows, COLUMNS))
    plot(rows, bench.png, header.split("\n")[0])
    return record


def open_session(bench: Bench, s: dict, workloads: dict) -> Session:
    """One engine (stage fsm) sized for every request at once, warmed up; the prompts tokenized; the
    schemas translated, and their DFAs timed apart from the engine."""
    n = s["num_requests"]
    mc = read_config(bench.model, bench.load_format)[0]
    max_len = min(mc.max_position_embeddings, s["max_tokens"] + 128)  # room for the longest prompt
    llm = bench.llm(
        "fsm",
        max_model_len=max_len,
        kv_cache_tokens=16 * -(-int(1.25 * n * max_len) // 16),  # everyone at once, with room for jumps
        max_num_seqs=max(n, 8),
    )
    tok = llm.tokenizer
    if tok is None:
        raise ValueError(f"model={bench.model!r}: chapter 5 needs a tokenizer (constraints are over text)")
    texts = sorted({p for w in workloads.values() for _, p in w})
    encoded = {t: tok.encode(t) for t in texts}
    max_tokens = min(s["max_tokens"], max_len - max(len(ids) for ids in encoded.values()) - 1)
    warm_up(llm, 2, 16)  # first-call costs of the engine itself, unconstrained

    regexes = {k: json_schema_to_regex(v) for k, v in SCHEMAS.items()}
    vocab, setup = vocabulary(tok, llm.engine.eos_token_ids)
    return Session(
        llm=llm,
        scale=s,
        encoded=encoded,
        max_tokens=max_tokens,
        regexes=regexes,
        vocab=vocab,
        setup=setup,
        per_schema=schema_info(regexes, s["build_repeats"]),
        guides={k: {} for k in STRATEGIES},
        validator=Validator(regexes),
        progress=bench.progress,
        cuda=bench.device.startswith("cuda"),
    )


def run_workload(session: Session, wname: str, reqs: list[tuple[str, str]]) -> WorkloadRuns:
    """The workload's requests, all at once, under each strategy in turn, then unconstrained."""
    llm, progress = session.llm, session.progress
    engine = llm.engine
    schemas = [k for k, _ in reqs]
    prompts = [session.encoded[p] for _, p in reqs]
    constrained = [
        SamplingParams(json_schema=SCHEMAS[k], temperature=0.0, max_tokens=session.max_tokens)
        for k in schemas
    ]
    if session.cuda:  # cuDNN plans each new attention shape once: naive's shapes are indexed's (same tokens)
        engine.reconfigure(constrained_decoding="indexed")
        run_batch(llm, prompts, constrained, f"{wname}: shape warm-up", progress)
    rows, per_request, outputs = [], {}, {}
    for strategy in (*STRATEGIES, "unconstrained"):
        if strategy == "unconstrained":
            med = int(statistics.median(len(o.token_ids) for o in outputs["indexed"]))
            params = [SamplingParams(temperature=0.0, max_tokens=max(1, med), ignore_eos=True)] * len(reqs)
            engine.reconfigure()
            if session.cuda:
                run_batch(llm, prompts, params, f"{wname} unconstrained: warm-up", progress)
        else:
            params = constrained
            build_guides(session, wname, strategy, schemas, prompts)
            if session.cuda and strategy == "compressed":  # jumps re-prefill: shapes the others never make
                engine.reconfigure()
                run_batch(llm, prompts, params, f"{wname} {strategy}: shape warm-up", progress)
        engine.reconfigure()  # a fresh KV pool and prefix cache; the strategy's guides are kept
        outs, duration, constraint_s = run_batch(llm, prompts, params, f"{wname} {strategy}", progress)
        outputs[strategy] = outs
        row = run_row(wname, strategy, schemas, outs, duration, constraint_s, session.validator)
        if strategy == "unconstrained":
            row["max_tokens"] = params[0].max_tokens
        rows.append(row)
        per_request[f"{wname}/{strategy}"] = request_records(schemas, outs)
    return WorkloadRuns(
        rows=rows,
        per_request=per_request,
        same_tokens=[o.token_ids for o in outputs["naive"]] == [o.token_ids for o in outputs["indexed"]],
        same_text_pct=100
        * statistics.fmean(a.text == b.text for a, b in zip(outputs["compressed"], outputs["indexed"])),
        replay_seqs=[(k, o.token_ids) for k, o in zip(schemas, outputs["indexed"])][
            : session.scale["replay_requests"]
        ],
    )


def build_guides(session: Session, wname: str, strategy: str, schemas: list[str], prompts) -> None:
    """Switch the engine to `strategy` (an empty guide cache) and let an untimed warm-up (one short
    request per schema) compile the schemas; record the index build time of the guides it built."""
    engine = session.llm.engine
    one_each = sorted(set(schemas), key=list(SCHEMAS).index)
    first = [prompts[schemas.index(k)] for k in one_each]
    small = [SamplingParams(json_schema=SCHEMAS[k], temperature=0.0, max_tokens=8) for k in one_each]
    engine.reconfigure(constrained_decoding=strategy)
    run_batch(session.llm, first, small, f"{wname} {strategy}: warm-up", session.progress)
    for k in one_each:  # cached by now: the guides the warm-up built, on a fresh factory
        g = session.guides[strategy][k] = engine.guides.guide(session.regexes[k])
        info = session.per_schema[k]
        info[f"{strategy}_index_ms"] = 1000 * g.build_seconds
        info[f"{strategy}_build_ms"] = info["regex_to_dfa_ms"] + 1000 * g.build_seconds
        if strategy == "indexed":
            info["index_states"] = g.index.num_states


def request_records(schemas: list[str], outs) -> list[dict]:
    """One record per request for the JSON: its schema, finish, token counts, latencies and text."""
    return [
        {
            "schema": k,
            "finish_reason": o.finish_reason,
            "num_output_tokens": o.metrics.num_output_tokens,
            "num_steps": o.metrics.num_steps,
            "num_forced_tokens": o.metrics.num_forced_tokens,
            "ttft_ms": 1000 * o.metrics.ttft,
            "e2el_ms": 1000 * o.metrics.e2e,
            "text": o.text,
        }
        for k, o in zip(schemas, outs)
    ]


def replay_strategies(session: Session, replay_seqs: dict) -> dict:
    """Offline replay: indexed's outputs through every strategy's guides ("workload/strategy" -> stats)."""
    eos, replays = session.llm.engine.eos_token_ids, {}
    for strategy in tqdm(STRATEGIES, desc="mask replay", disable=not session.progress, leave=False):
        for wname, seqs in replay_seqs.items():
            replays[f"{wname}/{strategy}"] = replay_ours(
                strategy,
                session.guides[strategy],
                len(session.vocab),
                seqs,
                eos,
                session.scale["replay_naive_masks"],
            )
    return replays
