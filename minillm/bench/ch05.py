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

Run: minillm bench --chapter 5 [--quick] [--device cuda --model qwen3-0.6b --load-format dummy]
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import random
import statistics
import time
from collections import Counter

import torch
from tqdm import tqdm

from minillm.bench.common import Bench, warm_up
from minillm.bench.metrics import percentile
from minillm.bench.report import markdown_table, pyplot, save_figure
from minillm.bench.runner import RunResult
from minillm.constrained import regex as regex_module
from minillm.constrained.guide import STRATEGIES
from minillm.constrained.index import VocabTrie, Vocabulary
from minillm.constrained.json_schema import json_schema_to_regex
from minillm.model.loader import read_config
from minillm.request import SamplingParams


def _string(n: int) -> dict:
    return {"type": "string", "maxLength": n}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


CARD = _object(
    {
        "name": _string(24),
        "house": {"enum": ["Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin"]},
        "blood_status": {"enum": ["Pure-blood", "Half-blood", "Muggle-born"]},
        # length in inches, an integer range: a JSON number has no bounds in json_schema_to_regex, and
        # under dummy weights an unbounded digit run took every card to max_tokens
        "wand": _object(
            {
                "wood": _string(16),
                "core": _string(16),
                "length": {"type": "integer", "minimum": 7, "maximum": 16},
            }
        ),
        "alive": {"type": "boolean"},
        "patronus": _string(24),
    }
)
MIX = {
    "product": _object(
        {
            "name": _string(32),
            "category": {"enum": ["books", "electronics", "garden", "kitchen", "toys"]},
            "price_cents": {"type": "integer", "minimum": 0, "maximum": 100000},
            "tags": {"type": "array", "items": _string(12), "maxItems": 3},
            "in_stock": {"type": "boolean"},
        }
    ),
    "event": _object(
        {
            "title": _string(32),
            "date": {"type": "string", "format": "date"},
            "location": _object({"city": _string(20), "country": _string(20)}),
            "capacity": {"type": "integer", "minimum": 1, "maximum": 5000},
        }
    ),
    "user": _object(
        {
            "username": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,15}$"},
            "full_name": _string(32),
            "age": {"type": "integer", "minimum": 13, "maximum": 120},
            "is_admin": {"type": "boolean"},
        },
        required=["username", "is_admin"],
    ),
    "tool_call": _object(
        {
            "tool": {"enum": ["search", "get_weather", "send_email", "calculator"]},
            "arguments": _object(
                {
                    "query": _string(40),
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
                    "language": {"enum": ["en", "fr", "de", "ja"]},
                }
            ),
        }
    ),
    "review": _object(
        {
            "product_id": {"type": "integer", "minimum": 1, "maximum": 99999},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "sentiment": {"enum": ["positive", "neutral", "negative"]},
            "summary": _string(48),
            "verified": {"type": "boolean"},
        }
    ),
}
SCHEMAS = {"card": CARD, **MIX}
PROMPTS = {
    "card": [
        "Character card of a Hogwarts student, as JSON:\n",
        "Here is the character card of a Hogwarts student in JSON:\n",
        "A new student was sorted today. Their character card, as JSON:\n",
        "Character card of a Hogwarts student (JSON, one line):\n",
    ],
    "product": ["A product listing from an online shop, as JSON:\n", "Catalogue entry (JSON):\n"],
    "event": ["An upcoming event, as JSON:\n", "Conference announcement in JSON format:\n"],
    "user": ["A user account record, as JSON:\n", "User profile (JSON):\n"],
    "tool_call": ["A function call from the assistant, as JSON:\n", "Tool call (JSON):\n"],
    "review": ["A customer review, as JSON:\n", "Review summary in JSON:\n"],
}
WORKLOADS = ("character card", "json-schema mix")

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
PEERS = {"outlines-core": "outlines_core", "xgrammar": "xgrammar", "llguidance": "llguidance"}


def make_workloads(n: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """workload -> [(schema name, prompt)]: the card for every request, or the mix schemas in turn."""
    rng = random.Random(seed)
    card = [("card", rng.choice(PROMPTS["card"])) for _ in range(n)]
    names = list(MIX)
    mix = [(names[i % len(names)], rng.choice(PROMPTS[names[i % len(names)]])) for i in range(n)]
    return dict(zip(WORKLOADS, (card, mix)))


def fresh_dfa(pattern: str):
    """compile_regex past its lru_cache: the engine's warm-up would make later compiles free."""
    raw = getattr(regex_module._compile_cached, "__wrapped__", None)
    return raw(pattern, 20_000, 10.0) if raw is not None else regex_module.compile_regex(pattern)


def _median_time(fn, repeats: int):
    """(median seconds over repeats, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


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
        s, dfa = _median_time(lambda rx=rx: fresh_dfa(rx), repeats)
        out[name] = {"regex_chars": len(rx), "dfa_states": dfa.num_states, "regex_to_dfa_ms": 1000 * s}
    return out


def run_batch(llm, prompts, params, label: str, progress: bool):
    """Submit every request at once and step until all finish. Returns (outputs in order, seconds,
    host seconds on constraints)."""
    engine = llm.engine
    engine.step_stats.clear()
    if engine.config.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    order = {}
    for i, ((text, ids), sp) in enumerate(zip(prompts, params)):
        order[engine.add_request(text, sp, arrival_time=start, prompt_token_ids=ids)] = i
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


# -- mask replay: the same token sequences through every guide, ours and the peers' -------------------
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


class _Peer:
    """One peer library behind four calls: setup (tokenizer), compile (schema), start, fill/advance."""

    name = ""

    def bitmask(self, vocab_size: int) -> torch.Tensor:
        return torch.zeros(1, (vocab_size + 31) // 32, dtype=torch.int32)


class _OutlinesCore(_Peer):
    name = "outlines-core"
    layout = "its own schema -> regex, default whitespace [ ]? around separators"

    def setup(self, vocab: Vocabulary, hf, eos_ids, vocab_size):
        import outlines_core

        self.oc = outlines_core
        by_bytes: dict[bytes, list[int]] = {}
        for i, data in enumerate(vocab.token_bytes):
            if data:
                by_bytes.setdefault(data, []).append(i)
        self.vocab = outlines_core.Vocabulary(min(eos_ids), by_bytes)

    def compile(self, schema):
        rx = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(rx, self.vocab)

    def start(self, index):
        return self.oc.Guide(index)

    def fill(self, guide, bm):
        guide.write_mask_into(bm.data_ptr(), bm.numel(), bm.element_size())

    def advance(self, guide, tok) -> bool:
        try:
            guide.advance(tok, return_tokens=False)
        except ValueError:
            return False
        return True


class _XGrammar(_Peer):
    """xgrammar 0.2.8 refuses escapes (backslash) inside a string that has a maxLength, which JSON and our
    regex allow: a replayed output with one stops there and counts as refused."""

    name = "xgrammar"
    layout = "compile_json_schema(any_whitespace=False, separators=(', ', ': ')), compiler cache off"

    def setup(self, vocab, hf, eos_ids, vocab_size):
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            hf, vocab_size=vocab_size, stop_token_ids=sorted(eos_ids)
        )
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def compile(self, schema):
        return self.compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=(", ", ": ")
        )

    def start(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher, bm):
        matcher.fill_next_token_bitmask(bm)

    def advance(self, matcher, tok) -> bool:
        return matcher.accept_token(tok)


class _LLGuidance(_Peer):
    """llguidance 1.9.1 refuses the escape \\/ (and \\u escapes of printable characters by default), which
    JSON and our regex allow: a replayed output with one stops there and counts as refused. Its lexer is
    built lazily, so compiling is cheap and the first pass of the replay pays the rest."""

    name = "llguidance"
    layout = "grammar_from_json_schema, whitespace_flexible off, separators ', ' and ': '"

    def setup(self, vocab, hf, eos_ids, vocab_size):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(hf, n_vocab=vocab_size, eos_token=sorted(eos_ids))

    def compile(self, schema):
        overrides = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, overrides=overrides)
        matcher = self.llg.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher  # in its initial state; each sequence starts from a copy

    def start(self, matcher):
        return matcher.deep_copy()

    def fill(self, matcher, bm):
        self.llg.torch.fill_next_token_bitmask(matcher, bm)

    def advance(self, matcher, tok) -> bool:
        return matcher.consume_token(tok)


PEER_CLASSES = (_OutlinesCore, _XGrammar, _LLGuidance)


def available_peers() -> tuple[list[type[_Peer]], dict[str, str]]:
    """(installed peer classes, {missing peer: why})."""
    found, missing = [], {}
    for cls in PEER_CLASSES:
        try:
            importlib.import_module(PEERS[cls.name])
            found.append(cls)
        except ImportError as e:
            missing[cls.name] = f"not installed ({e.name or e})"
        except Exception as e:  # a broken install must not stop the benchmark
            missing[cls.name] = f"import failed: {type(e).__name__}: {e}"
    return found, missing


def measure_peers(classes, vocab, tokenizer_dir, eos_ids, seqs_by_workload, schema_names, repeats, progress):
    """Each installed peer on the CPU: tokenizer setup, compile time per schema, mask replay per workload."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    return {
        cls.name: measure_peer(cls(), vocab, hf, eos_ids, seqs_by_workload, schema_names, repeats)
        for cls in tqdm(classes, desc="peers", disable=not progress, leave=False)
    }


def measure_peer(peer: _Peer, vocab, hf, eos_ids, seqs_by_workload, schema_names, repeats) -> dict:
    res = {
        "version": importlib.metadata.version(peer.name),
        "layout": peer.layout,
        "compile_ms": {},
        "errors": {},
        "replay": {},
    }
    try:
        t0 = time.perf_counter()
        # a named dummy config's own EOS id lies past this tokenizer: the peers get the tokenizer's
        peer.setup(vocab, hf, {t for t in eos_ids if t < len(vocab)}, len(vocab))
        res["setup_ms"] = 1000 * (time.perf_counter() - t0)
    except Exception as e:  # a peer that cannot read this tokenizer is reported, not fatal
        res["errors"]["setup"] = f"{type(e).__name__}: {e}"
        return res
    compiled = {}
    for name in schema_names:
        try:
            s, compiled[name] = _median_time(lambda n=name: peer.compile(SCHEMAS[n]), repeats)
            res["compile_ms"][name] = 1000 * s
        except Exception as e:
            res["errors"][name] = f"{type(e).__name__}: {e}"
    bm = peer.bitmask(len(vocab))
    for workload, seqs in seqs_by_workload.items():
        seqs = [(s, ids) for s, ids in seqs if s in compiled]
        if seqs:
            res["replay"][workload] = replay(
                seqs, lambda s: peer.start(compiled[s]), lambda m: peer.fill(m, bm), peer.advance, eos_ids
            )
    return res


def run(model: str, **options) -> dict:
    """`minillm bench --chapter 5`; options: Bench's fields (device, load_format, quick, out, dtype, progress)."""
    with Bench(5, model, **options) as bench:
        return measure(bench)


def measure(bench: Bench) -> dict:
    s, progress, model = bench.scale(SCALES), bench.progress, bench.model
    n, cuda = s["num_requests"], bench.device.startswith("cuda")
    mc = read_config(model, bench.load_format)[0]
    workloads = make_workloads(n, s["seed"])
    max_len = min(mc.max_position_embeddings, s["max_tokens"] + 128)  # room for the longest prompt
    llm = bench.llm(
        "fsm",
        max_model_len=max_len,
        kv_cache_tokens=16 * -(-int(1.25 * n * max_len) // 16),  # everyone at once, with room for jumps
        max_num_seqs=max(n, 8),
    )
    engine, tok = llm.engine, llm.tokenizer
    if tok is None:
        raise ValueError(f"model={model!r}: chapter 5 needs a tokenizer (constraints are over text)")
    texts = sorted({p for w in workloads.values() for _, p in w})
    encoded = {t: engine.encode_prompt(0, t) for t in texts}
    max_tokens = min(s["max_tokens"], max_len - max(len(ids) for ids in encoded.values()) - 1)
    warm_up(llm, 2, 16)  # first-call costs of the engine itself, unconstrained

    regexes = {k: json_schema_to_regex(v) for k, v in SCHEMAS.items()}
    vocab, setup = vocabulary(tok, engine.eos_token_ids)
    per_schema = schema_info(regexes, s["build_repeats"])
    guides = {k: {} for k in STRATEGIES}  # the engine's own, for the replay
    validator = Validator(regexes)

    rows, per_request, same_tokens, same_text = [], {}, {}, {}
    replay_seqs = {}
    for wname, reqs in workloads.items():
        schemas = [k for k, _ in reqs]
        prompts = [(p, encoded[p]) for _, p in reqs]
        constrained = [
            SamplingParams(json_schema=SCHEMAS[k], temperature=0.0, max_tokens=max_tokens) for k in schemas
        ]
        one_each = sorted(set(schemas), key=list(SCHEMAS).index)
        first = {k: prompts[schemas.index(k)] for k in one_each}
        small = (
            [first[k] for k in one_each],
            [SamplingParams(json_schema=SCHEMAS[k], temperature=0.0, max_tokens=8) for k in one_each],
        )
        if cuda:  # cuDNN plans each new attention shape once: naive's shapes are indexed's (same tokens)
            engine.reconfigure(constrained_decoding="indexed")
            run_batch(llm, prompts, constrained, f"{wname}: shape warm-up", progress)
        outputs = {}
        for strategy in (*STRATEGIES, "unconstrained"):
            if strategy == "unconstrained":
                med = int(statistics.median(len(o.token_ids) for o in outputs["indexed"]))
                params = [SamplingParams(temperature=0.0, max_tokens=max(1, med), ignore_eos=True)] * n
                engine.reconfigure()
                if cuda:
                    run_batch(llm, prompts, params, f"{wname} unconstrained: warm-up", progress)
            else:
                params = constrained
                engine.reconfigure(constrained_decoding=strategy)  # a new strategy: an empty guide cache
                run_batch(llm, *small, f"{wname} {strategy}: warm-up", progress)  # compiles the schemas
                for k in one_each:  # cached by now: the guides the warm-up built, on a fresh factory
                    g = guides[strategy][k] = engine.guides.guide(regexes[k])
                    per_schema[k][f"{strategy}_index_ms"] = 1000 * g.build_seconds
                    per_schema[k][f"{strategy}_build_ms"] = (
                        per_schema[k]["regex_to_dfa_ms"] + 1000 * g.build_seconds
                    )
                    if strategy == "indexed":
                        per_schema[k]["index_states"] = g.index.num_states
                if cuda and strategy == "compressed":  # jumps re-prefill: shapes the others never make
                    engine.reconfigure()
                    run_batch(llm, prompts, params, f"{wname} {strategy}: shape warm-up", progress)
            engine.reconfigure()  # a fresh KV pool and prefix cache; the strategy's guides are kept
            outs, duration, constraint_s = run_batch(llm, prompts, params, f"{wname} {strategy}", progress)
            outputs[strategy] = outs
            row = run_row(wname, strategy, schemas, outs, duration, constraint_s, validator)
            if strategy == "unconstrained":
                row["max_tokens"] = params[0].max_tokens
            rows.append(row)
            per_request[f"{wname}/{strategy}"] = [
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
        same_tokens[wname] = [o.token_ids for o in outputs["naive"]] == [
            o.token_ids for o in outputs["indexed"]
        ]
        same_text[wname] = 100 * statistics.fmean(
            a.text == b.text for a, b in zip(outputs["compressed"], outputs["indexed"])
        )
        replay_seqs[wname] = [(k, o.token_ids) for k, o in zip(schemas, outputs["indexed"])][
            : s["replay_requests"]
        ]

    # offline replay: indexed's outputs through every strategy's guides, then the peers'
    eos = engine.eos_token_ids
    replays = {}
    for strategy in tqdm(STRATEGIES, desc="mask replay", disable=not progress, leave=False):
        for wname, seqs in replay_seqs.items():
            replays[f"{wname}/{strategy}"] = replay_ours(
                strategy, guides[strategy], len(vocab), seqs, eos, s["replay_naive_masks"]
            )
    found, missing = available_peers()
    if missing:
        print(
            f"chapter 5 peers not measured: {', '.join(f'{k}: {v}' for k, v in missing.items())}"
            " (pip install -e '.[peers]')"
        )
    peers = measure_peers(
        found, vocab, tok.path, eos, replay_seqs, list(SCHEMAS), s["build_repeats"], progress
    )

    rows = finish_rows(rows, workloads, per_schema, replays, peers)
    token_identical = all(same_tokens.values())
    cols = [
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
    dt = llm.config.torch_dtype
    schema_table = markdown_table(
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
    peer_line = (
        "Peers (CPU, same tokenizer, schemas and replayed tokens; mask = fill the library's bitmask): "
        + "; ".join(f"{k} {v['version']} ({v['layout']})" for k, v in peers.items())
        if peers
        else "Peers: none installed"
    )
    for k, v in peers.items():
        refused = sum(r["refused_sequences"] for r in v["replay"].values())
        if v["errors"] or refused:
            peer_line += f"; {k}: errors on {', '.join(v['errors']) or 'none'}, {refused} replays refused"
    if missing:
        peer_line += f"; not measured: {', '.join(missing)}"
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
        f" so the model goes on from another context.\n{peer_line}.\n\n" + schema_table
    )
    table = markdown_table(rows, cols)
    payload = {
        "scale": s,
        "max_tokens": max_tokens,
        "workload": {
            "requests": {k: [{"schema": a, "prompt": b} for a, b in w] for k, w in workloads.items()},
            "schemas": SCHEMAS,
            "regexes": regexes,
            "seed": s["seed"],
        },
        "config": {"engine": vars(llm.config), "strategy_order": [*STRATEGIES, "unconstrained"]},
        "build": {"setup": setup, "per_schema": per_schema},
        "replay": replays,
        "peers": peers,
        "peers_missing": missing,
        "replay_sequences": {
            w: [{"schema": k, "token_ids": ids} for k, ids in seqs] for w, seqs in replay_seqs.items()
        },
        "validity_method": validator.method,
        "token_identical": token_identical,  # naive vs indexed
        "compressed_same_text_pct": same_text,
        "aggregates": rows,
        "per_request": per_request,
    }
    record = bench.publish(payload, header, table)
    plot(rows, bench.png, header.split("\n")[0])
    return record


def peer_compile(peers: dict, schema: str) -> dict:
    return {f"peer_{k}": v["compile_ms"].get(schema) for k, v in peers.items()}


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
