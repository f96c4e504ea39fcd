"""Chapter 9 benchmark: what a program's prefix structure buys. Four programs from the SGLang paper,
in small form, run with run_batch on the in-process Runtime, twice under the same engine settings:

  no cache    stage fsm with prefix_cache=None: the same calls, each prefilled in full, as
              independent requests would be
(both mask constrained tokens per step, constrained_decoding="indexed": the compressed FSM's
jump-forward needs a prefix cache, so it cannot run in the first variant)
  radix       stage fsm with its radix cache: the cache (chapter 3) serves every prefix a call shares with
              an earlier or concurrent one (select keeps its prefix cached: logprob_start_len)

Programs (text, seeded; Python-flavoured so the embedded code model sees familiar text):
  few_shot   a few-shot prefix of examples + a question + select among 4 choices
  chat       multi-turn: each turn appends a user message and generates a reply
  tree       tree of thought: a root, fork(fan_out), a gen per branch, fork again, a gen per leaf
  json       a document, then gen with a JSON schema (constrained decoding, chapter 5)
Reported per (program, variant): programs/s, wall seconds, cached-token ratio (prompt tokens served
from the cache / prompt tokens looked up), forward passes (engine steps), prefill tokens computed, and
whether the captured values equal no cache's (greedy: they must).

Run: minillm bench --chapter 9 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
Checked by: pytest tests/test_bench.py (quick scale).
"""

from __future__ import annotations

import random
import time

import minillm.lang as ml
from minillm.bench.common import Bench
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.model.loader import read_config

SCALES = {
    "quick": dict(
        few_shot=dict(num_programs=8, num_examples=4, example_words=10),
        chat=dict(num_programs=4, num_turns=3, message_words=8),
        tree=dict(num_programs=2, fan_out=3, root_words=24),
        json=dict(num_programs=4, doc_words=24),
        max_tokens=8,
        block_size=16,
        max_model_len=256,
    ),
    "full": dict(
        few_shot=dict(num_programs=64, num_examples=12, example_words=30),
        chat=dict(num_programs=16, num_turns=4, message_words=40),
        tree=dict(num_programs=8, fan_out=3, root_words=200),
        json=dict(num_programs=32, doc_words=300),
        max_tokens=32,
        block_size=16,
        max_model_len=2048,
    ),
}
# name -> EngineConfig overrides on stage fsm. Both mask constrained tokens per step ("indexed"):
# the compressed FSM's jump-forward re-prefills through the prefix cache, so it needs one.
VARIANTS = {
    "no cache": dict(prefix_cache=None, schedule_policy="fcfs", constrained_decoding="indexed"),
    "radix": dict(constrained_decoding="indexed"),
}
WORDS = (  # words that tokenize short in the embedded model and in the tests' tiny tokenizer
    "def return if else for in self items class import fibonacci Stack quick brown fox jumps over "
    "lazy dog os sys init range n"
).split()
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
    "required": ["name", "ok"],
}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# -- the programs --------------------------------------------------------------------------------
@ml.function
def few_shot(s, examples, question, choices, max_tokens):
    s += examples + "# question: " + question + "\n# answer:"
    s += ml.select("answer", choices=choices)


@ml.function
def chat(s, system, messages, max_tokens):
    s += system
    for i, m in enumerate(messages):
        s += "\n# user: " + m + "\n# assistant:"
        s += ml.gen(f"reply{i}", max_tokens=max_tokens, ignore_eos=True)


@ml.function
def tree(s, root, fan_out, max_tokens):
    s += root + "\n# plan:"
    leaves = []
    for i, branch in enumerate(s.fork(fan_out)):
        branch += f" step {i}:" + ml.gen("step", max_tokens=max_tokens, ignore_eos=True)
        for j, leaf in enumerate(branch.fork(2)):
            leaf += f"\n# check {j}:" + ml.gen("check", max_tokens=max_tokens, ignore_eos=True)
            leaves.append(leaf)
    return [leaf["check"] for leaf in leaves]


@ml.function
def json_extract(s, doc, max_tokens):
    s += doc + "\n# record = "
    s += ml.gen("record", max_tokens=4 * max_tokens, json_schema=SCHEMA)


def build_programs(scale: dict, seed: int = 0) -> dict:
    """program name -> (function, list of kwargs): the same seeded texts for every variant."""
    rng, n = random.Random(seed), scale["max_tokens"]
    fs = scale["few_shot"]
    examples = "".join(
        f"# question: {_words(rng, fs['example_words'])}\n# answer: {rng.choice(WORDS)}\n"
        for _ in range(fs["num_examples"])
    )
    choices = [" " + w for w in rng.sample(WORDS, 4)]
    few = [
        dict(examples=examples, question=_words(rng, 8), choices=choices, max_tokens=n)
        for _ in range(fs["num_programs"])
    ]
    ch = scale["chat"]
    system = "# a helpful assistant for code\n" + _words(rng, ch["message_words"])
    chats = [
        dict(
            system=system,
            messages=[_words(rng, ch["message_words"]) for _ in range(ch["num_turns"])],
            max_tokens=n,
        )
        for _ in range(ch["num_programs"])
    ]
    tr = scale["tree"]
    trees = [
        dict(root=_words(rng, tr["root_words"]), fan_out=tr["fan_out"], max_tokens=n)
        for _ in range(tr["num_programs"])
    ]
    js = scale["json"]
    doc = _words(rng, js["doc_words"])
    docs = [dict(doc=doc + "\n# item: " + _words(rng, 6), max_tokens=n) for _ in range(js["num_programs"])]
    return {
        "few_shot": (few_shot, few),
        "chat": (chat, chats),
        "tree": (tree, trees),
        "json": (json_extract, docs),
    }


def run_program(llm, func, batch: list[dict]) -> dict:
    """run_batch on a fresh Runtime; the engine's counters before and after give this program's share."""
    engine = llm.engine
    blocks = engine.kv.manager
    queried0, hit0 = blocks.num_queried_tokens, blocks.num_hit_tokens
    engine.step_stats.clear()
    runtime = ml.Runtime(llm)
    t0 = time.perf_counter()
    states = func.run_batch(batch, backend=runtime)
    wall = time.perf_counter() - t0
    runtime.shutdown()
    queried, hit = blocks.num_queried_tokens - queried0, blocks.num_hit_tokens - hit0
    return {
        "wall_s": wall,
        "programs_per_s": len(batch) / wall,
        "cached_ratio": hit / queried if queried else 0.0,
        "prompt_tokens": queried,
        "cached_tokens": hit,
        "forward_passes": runtime.num_steps,
        "requests": runtime.num_requests,
        "tokens_fed": sum(s.num_tokens for s in engine.step_stats),
        "values": [_captured(s) for s in states],
    }


def _captured(state) -> list:
    out = [sorted(state.variables.items())]
    if state.ret_value is not None:
        out.append(state.ret_value)
    return out


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 9`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(9, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s = bench.scale(SCALES)
    max_pos = read_config(bench.model, bench.load_format)[0].max_position_embeddings
    max_len = min(s["max_model_len"], max_pos)
    programs = build_programs(s)
    rows, values = [], {}
    for variant, overrides in VARIANTS.items():
        llm = bench.llm(
            "fsm", max_model_len=max_len, block_size=s["block_size"], max_num_seqs=64, **overrides
        )
        warm = programs["few_shot"][1][:1]
        warm_rt = ml.Runtime(llm)
        programs["few_shot"][0].run_batch(warm, backend=warm_rt)  # first-call costs, untimed
        warm_rt.shutdown()
        llm.engine.reconfigure()  # a fresh KV pool and cache: the warm-up leaves nothing to hit
        for name, (func, batch) in programs.items():
            r = run_program(llm, func, batch)
            values[(name, variant)] = r.pop("values")
            rows.append({"program": name, "variant": variant, "num_programs": len(batch), **r})
    base = {r["program"]: r for r in rows if r["variant"] == "no cache"}
    for r in rows:
        b = base[r["program"]]
        r["speedup"] = b["wall_s"] / r["wall_s"]
        r["same_values"] = values[(r["program"], r["variant"])] == values[(r["program"], "no cache")]
    token_identical = all(r["same_values"] for r in rows)
    header = bench.title(bench.dtype or "default") + (
        f"\n\nworkload: {', '.join(f'{k} x{len(v[1])}' for k, v in programs.items())}; greedy, "
        f"max_tokens={s['max_tokens']}, block_size={s['block_size']}; stage fsm, run_batch on Runtime(llm)"
    )
    table = markdown_table(rows, COLUMNS)
    payload = {"scale": s, "rows": rows, "token_identical": token_identical}
    record = bench.publish(payload, header, table)
    _plot(rows, bench)
    return record


COLUMNS = [
    ("program", "program", ""),
    ("variant", "variant", ""),
    ("num_programs", "programs", "d"),
    ("requests", "requests", "d"),
    ("wall_s", "wall s", ".2f"),
    ("programs_per_s", "programs/s", ".2f"),
    ("speedup", "x no cache", ".2f"),
    ("cached_ratio", "cached ratio", ".2f"),
    ("forward_passes", "forward passes", "d"),
    ("tokens_fed", "tokens fed", "d"),
    ("same_values", "same values", ""),
]


def _plot(rows: list[dict], bench: Bench) -> None:
    plt = pyplot()
    names = list(dict.fromkeys(r["program"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    for k, variant in enumerate(VARIANTS):
        vals = {r["program"]: r for r in rows if r["variant"] == variant}
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        axes[0].bar(xs, [vals[n]["programs_per_s"] for n in names], width, label=variant)
        axes[1].bar(xs, [vals[n]["tokens_fed"] for n in names], width, label=variant)
    for ax, label in zip(axes, ("programs / s", "tokens fed to the model")):
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(label)
        ax.legend()
    save_figure(fig, bench.png, bench.title(bench.dtype or "default").splitlines()[0])
