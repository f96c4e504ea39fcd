"""Chapter 5 benchmark peers: outlines-core, xgrammar and llguidance behind one small interface, measured
on the CPU with our tokenizer, schemas and replayed tokens (compile time per schema, mask time per token).

Each is optional (pip install -e '.[peers]'); a missing or broken one is reported, not fatal.
Used by minillm/bench/ch05.py (minillm bench --chapter 5); checked by pytest tests/test_bench.py.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import time

import torch
from tqdm import tqdm

from minillm.bench.ch05_replay import median_time, replay
from minillm.constrained.index import Vocabulary

PEERS = {"outlines-core": "outlines_core", "xgrammar": "xgrammar", "llguidance": "llguidance"}


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


def measure_peers(classes, vocab, tokenizer_dir, eos_ids, seqs_by_workload, schemas, repeats, progress):
    """Each installed peer on the CPU: tokenizer setup, compile time per schema ({name: JSON Schema}), mask
    replay per workload ({workload: [(schema name, token ids)]})."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    return {
        cls.name: measure_peer(cls(), vocab, hf, eos_ids, seqs_by_workload, schemas, repeats)
        for cls in tqdm(classes, desc="peers", disable=not progress, leave=False)
    }


def measure_peer(peer: _Peer, vocab, hf, eos_ids, seqs_by_workload, schemas, repeats) -> dict:
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
    for name, schema in schemas.items():
        try:
            s, compiled[name] = median_time(lambda schema=schema: peer.compile(schema), repeats)
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


def peer_compile(peers: dict, schema: str) -> dict:
    """A row of the schema table: each peer's compile time for this schema."""
    return {f"peer_{k}": v["compile_ms"].get(schema) for k, v in peers.items()}
