"""Chapter 5: the token index, the three guides, the compressed FSM and jump-forward, without a model.

Oracles: the DFA itself (checked against Python's re in test_ch5_regex.py) walked token by token over
the whole vocabulary, and the tokenizer's own encoding for re-tokenized text.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import DEFAULT_MODEL
from minillm.constrained.guide import (
    CompressedGuide,
    compress,
    forced_chains,
    make_guide,
    mask_logits,
)
from minillm.constrained.index import TokenIndex, Vocabulary
from minillm.constrained.json_schema import json_schema_to_regex
from minillm.constrained.regex import compile_regex
from minillm.tokenizer import Tokenizer

pytestmark = pytest.mark.ch5

CARD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "house": {"enum": ["Gryffindor", "Hufflepuff", "Ravenclaw", "Slytherin"]},
        "age": {"type": "integer", "minimum": 11, "maximum": 99},
        "wand": {"type": "object", "properties": {"wood": {"type": "string"}, "length": {"type": "number"}}},
        "alive": {"type": "boolean"},
    },
    "required": ["name", "house", "age", "wand", "alive"],
}
PATTERNS = [
    r"[a-z]+@[a-z]+\.(com|org)",
    r"(caf[eé]|na[iï]ve) [0-9]{2,3}€?",
    r'\{"id": [0-9]+, "tags": \[("[a-z]{1,5}"(, "[a-z]{1,5}"){0,2})?\]\}',
    r"yes|no|maybe",
    json_schema_to_regex(CARD),
]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return Vocabulary.from_tokenizer(tokenizer, {tokenizer.eos_token_id})


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(st.characters(codec="utf-8"), max_size=40))
def test_token_bytes_spell_the_text(tokenizer, vocab, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert vocab.text_bytes(ids) == text.encode("utf-8")


def test_tiny_tokenizer_bytes(tiny_path):
    tok = Tokenizer(tiny_path)
    vocab = Vocabulary.from_tokenizer(tok, set())
    for text in ["héllo wörld", "def f(x):\n    return x", "€ 😀 ok"]:
        assert vocab.text_bytes(tok.encode(text, add_special_tokens=False)) == text.encode()


@pytest.mark.parametrize("pattern", PATTERNS, ids=range(len(PATTERNS)))
def test_index_equals_walking_every_token(vocab, pattern):
    dfa = compile_regex(pattern)
    index = TokenIndex(dfa, vocab)
    naive = make_guide(dfa, vocab, "naive")
    seen = set()
    for state, allowed in index.allowed.items():
        brute = {t: dfa.walk(state, b) for t, b in enumerate(vocab.token_bytes) if b}
        assert allowed == {t: s for t, s in brute.items() if s is not None}
        eos = set(vocab.eos_token_ids)
        assert (eos <= set(index.allowed_tokens(state))) == dfa.is_accepting(state)
        assert sorted(naive.allowed_tokens(state)) == sorted(index.allowed_tokens(state))
        assert allowed or dfa.is_accepting(state)  # no dead end
        seen |= set(allowed.values())
    assert seen <= set(index.allowed)  # closed: every state a token leads to is indexed


def test_index_refuses_a_vocabulary_that_cannot_spell_the_pattern():
    vocab = Vocabulary([b"a", b"b", None], frozenset({2}), encode=lambda text: [])
    with pytest.raises(ValueError, match="no token"):
        TokenIndex(compile_regex("ac"), vocab)


@pytest.mark.parametrize("pattern", PATTERNS, ids=range(len(PATTERNS)))
def test_forced_chains_are_forced(pattern):
    dfa = compile_regex(pattern)
    for state, (forced, end) in forced_chains(dfa).items():
        s = state
        for b in forced:
            assert not dfa.is_accepting(s) and list(dfa.transitions[s]) == [b]
            s = dfa.transitions[s][b]
        assert s == end and (dfa.is_accepting(end) or len(dfa.transitions[end]) != 1)


def _random_match(dfa, rng, max_len=60) -> bytes:
    out, s = bytearray(), dfa.initial
    while len(out) < max_len:
        if dfa.is_accepting(s) and (not dfa.transitions[s] or rng.random() < 0.2):
            break
        b = rng.choice(sorted(dfa.transitions[s]))
        out.append(b)
        s = dfa.transitions[s][b]
    return bytes(out)


def _compressed_accepts(cfsm, data: bytes) -> bool:
    s, i = cfsm.initial, 0
    while i < len(data):
        edge = next((e for e in cfsm.edges[s] if data[i] in e[0]), None)
        if edge is None or not data[i + 1 :].startswith(edge[1]):
            return False
        i, s = i + 1 + len(edge[1]), edge[2]
    return s in cfsm.accepting


@pytest.mark.parametrize("pattern", PATTERNS, ids=range(len(PATTERNS)))
def test_compressed_fsm_accepts_the_same_strings(pattern):
    dfa = compile_regex(pattern)
    cfsm = compress(dfa)
    assert cfsm.num_states <= dfa.num_states
    rng = random.Random(0)
    for _ in range(200):
        data = _random_match(dfa, rng)
        if rng.random() < 0.5 and data:  # a mutation: drop, flip or append a byte
            i = rng.randrange(len(data))
            data = rng.choice([data[:i] + data[i + 1 :], data[:i] + b"x" + data[i + 1 :], data + b"}"])
        assert _compressed_accepts(cfsm, data) == dfa.accepts(data)


def test_the_card_starts_with_one_forced_edge():
    cfsm = compress(compile_regex(json_schema_to_regex(CARD)))
    [(first, forced, _)] = cfsm.edges[cfsm.initial]
    assert first == {ord("{")} and forced == b'"name": "'


@pytest.mark.parametrize("seed", range(12))
def test_jump_forward_keeps_the_text_and_resyncs_the_state(vocab, seed):
    """Random token walks through the card's index; at every forced chain the jump must extend the
    bytes by a prefix of the forced text, keep the unchanged head, and land in the DFA state of the new
    bytes (the re-spelling itself is checked by the next test)."""
    guide = CompressedGuide(compile_regex(json_schema_to_regex(CARD)), vocab)
    dfa, rng = guide.dfa, random.Random(seed)
    out, state, jumps = [], guide.initial_state, 0
    while not guide.is_terminal(state) and len(out) < 80:
        jump = guide.jump_forward(out, state)
        if jump is not None:
            jumps += 1
            old, new = vocab.text_bytes(out), vocab.text_bytes(jump.output_ids)
            forced, _ = guide.forced(state)
            assert new.startswith(old) and (old + forced).startswith(new) and len(new) > len(old)
            assert jump.output_ids[: jump.num_kept] == out[: jump.num_kept]
            assert jump.state == dfa.walk(dfa.initial, new)
            out, state = jump.output_ids, jump.state
            continue
        allowed = [t for t in guide.allowed_tokens(state) if t not in vocab.eos_token_ids]
        if not allowed:
            break
        token = rng.choice(allowed)
        out, state = out + [token], guide.next_state(state, token)
    assert jumps > 0
    assert dfa.walk(dfa.initial, vocab.text_bytes(out)) == state


def test_jump_forward_retokenizes_across_the_boundary(tokenizer, vocab):
    """Before the jump: the model wrote `{"` one token at a time; the jump re-spells it with the forced
    `name": "` as the tokenizer would. After the jump: `"age": ` ends in a space that the model should
    write together with the digits (` 42` is one token), so it is left to the model."""
    guide = CompressedGuide(compile_regex(r'\{"name": "[a-z]+", "age": [0-9]+\}'), vocab)
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    out = enc("{")
    state = guide.dfa.walk(guide.initial_state, b"{")
    jump = guide.jump_forward(out, state)
    assert vocab.text_bytes(jump.output_ids) == b'{"name": "'
    assert jump.output_ids == enc('{"name": "')
    out = jump.output_ids + enc("ada")
    state = guide.dfa.walk(guide.initial_state, vocab.text_bytes(out) + b'"')
    out = out + enc('"')
    jump = guide.jump_forward(out, state)
    text = vocab.text_bytes(jump.output_ids)
    assert text == b'{"name": "ada", "age":'  # the space goes with the digits
    assert len(enc(" 42")) == 1


def test_mask_logits_keeps_only_allowed_tokens(vocab):
    guide = make_guide(compile_regex("yes|no"), vocab, "indexed")
    logits = torch.randn(3, len(vocab))
    out = mask_logits(logits, [None, (guide, guide.initial_state), None])
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    kept = torch.isfinite(out[1]).nonzero().flatten().tolist()
    assert sorted(kept) == sorted(guide.allowed_tokens(guide.initial_state))
    assert torch.equal(out[1, kept], logits[1, kept])
