"""Three ways to make a model's output match a regex, side by side (seed section 3.2).

Each is a Guide: which tokens may come next in a DFA state, and which state a token leads to.

(a) NaiveGuide — the Guidance-era baseline: at every step, walk every token of the vocabulary through
    the DFA from the current state. Nothing to build, but each step pays O(vocabulary) in Python.
(b) IndexedGuide — Outlines: build the token index (minillm/constrained/index.py) once per pattern and
    tokenizer; a step is a dictionary lookup, and the mask tensor of a state is cached.
(c) CompressedGuide — SGLang's compressed FSM: (b), plus jump-forward. Where the DFA has a single way
    on (`{"name": "` in a JSON object with a fixed layout), those bytes are forced: decoding them one
    token per forward pass wastes passes. The compressed FSM merges each chain of singular transitions
    into one edge; when a request enters such a chain its forced text is appended at once, and the
    request re-prefills the new tokens in one pass, reusing the K/V of its unchanged prefix from the
    prefix cache (the engine's side, minillm/engine.py).

Jump-forward has two token boundaries to respect (`jump_forward`):
- before the jump: the model's last token may merge with the forced text (`"` then `name"` is better
  spelled `"name`), so the last generated token(s) and the forced text are re-tokenized together and
  the request continues from the new tokens, as the model would have spelled them;
- after the jump: the forced text's last token may merge with what the model writes next (`: ` then
  `12` is spelled `:` then ` 12` by a byte-level BPE). If a longer allowed token starts with it, that
  token is left to the model instead of being forced.
The DFA state is re-synchronised from the bytes, which re-tokenizing does not change.

Checked by: pytest -m ch5 -k guide.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass

import torch

from minillm.constrained.index import TokenIndex, VocabTrie, Vocabulary
from minillm.constrained.regex import DFA, compile_regex

STRATEGIES = ("naive", "indexed", "compressed")


class Guide:
    """A pattern's DFA seen through a vocabulary. Subclasses decide how allowed tokens are found."""

    strategy = ""

    def __init__(self, dfa: DFA, vocab: Vocabulary):
        self.dfa, self.vocab = dfa, vocab
        self.build_seconds = 0.0

    @property
    def initial_state(self) -> int:
        return self.dfa.initial

    def allowed_tokens(self, state: int) -> list[int]:
        raise NotImplementedError

    def next_state(self, state: int, token: int) -> int | None:
        """The state after token, None if the token is not allowed (EOS: None too)."""
        raise NotImplementedError

    def allowed_ids(self, state: int, device) -> torch.Tensor:
        """Allowed token ids as a tensor (what the sampler's mask needs)."""
        return torch.tensor(self.allowed_tokens(state), dtype=torch.long, device=device)

    def is_accepting(self, state: int) -> bool:
        return self.dfa.is_accepting(state)

    def is_terminal(self, state: int) -> bool:
        """The match is complete and nothing can follow: the request is done."""
        return self.dfa.is_accepting(state) and not self.dfa.transitions[state]

    def jump_forward(self, output_ids: list[int], state: int) -> Jump | None:
        return None  # only the compressed FSM jumps


class NaiveGuide(Guide):
    """(a): every step walks the whole vocabulary through the DFA."""

    strategy = "naive"

    def allowed_tokens(self, state: int) -> list[int]:
        walk = self.dfa.walk
        ids = [t for t, data in enumerate(self.vocab.token_bytes) if data and walk(state, data) is not None]
        if self.dfa.is_accepting(state):
            ids.extend(sorted(self.vocab.eos_token_ids))
        return ids

    def next_state(self, state: int, token: int) -> int | None:
        data = self.vocab.token_bytes[token] if token < len(self.vocab) else None
        return self.dfa.walk(state, data) if data else None


class IndexedGuide(Guide):
    """(b): the token index, built once; masks cached per state and device."""

    strategy = "indexed"

    def __init__(self, dfa: DFA, vocab: Vocabulary, trie: VocabTrie | None = None):
        super().__init__(dfa, vocab)
        self.index = TokenIndex(dfa, vocab, trie)
        self.build_seconds = self.index.build_seconds
        self._ids: dict[tuple[int, str], torch.Tensor] = {}

    def allowed_tokens(self, state: int) -> list[int]:
        return self.index.allowed_tokens(state)

    def next_state(self, state: int, token: int) -> int | None:
        return self.index.next_state(state, token)

    def allowed_ids(self, state: int, device) -> torch.Tensor:
        key = (state, str(device))
        ids = self._ids.get(key)
        if ids is None:
            ids = self._ids[key] = super().allowed_ids(state, device)
        return ids


@dataclass
class Jump:
    """A jump forward: the request's new output tokens, how many leading old ones are unchanged, and the
    DFA state after the new ones."""

    output_ids: list[int]
    num_kept: int
    state: int


class CompressedGuide(IndexedGuide):
    """(c): the index plus the compressed FSM's forced chains, for jump-forward."""

    strategy = "compressed"

    def __init__(self, dfa: DFA, vocab: Vocabulary, trie: VocabTrie | None = None):
        t0 = time.perf_counter()
        super().__init__(dfa, vocab, trie)
        self.chains = forced_chains(dfa)
        self.build_seconds = time.perf_counter() - t0
        self._extendable: dict[tuple[int, int], bool] = {}

    def forced(self, state: int) -> tuple[bytes, int]:
        """The bytes every match must continue with from state, and the state after them."""
        return self.chains.get(state, (b"", state))

    def jump_forward(self, output_ids: list[int], state: int) -> Jump | None:
        forced, _ = self.forced(state)
        if len(forced) < 2:  # as SGLang: a single forced byte is not worth a re-prefill
            return None
        vocab = self.vocab
        # Re-tokenize from the last generated token (further back if it starts inside a character).
        w = max(len(output_ids) - 1, 0)
        while w > 0 and _is_continuation(vocab.token_bytes[output_ids[w]]):
            w -= 1
        head = vocab.text_bytes(output_ids[w:])
        data = head + forced
        data = data[: _last_char_end(data)]  # forced text may stop inside a multi-byte character
        if len(data) - len(head) < 2:
            return None
        try:
            new = vocab.encode(data.decode("utf-8"))
        except UnicodeDecodeError:  # the window itself is not whole characters: do not jump
            return None
        if vocab.text_bytes(new) != data:  # a normalising tokenizer changed the text: do not jump
            return None
        ids = output_ids[:w] + new
        # After the jump: leave the last token to the model if a longer allowed token starts with it.
        start = self.dfa.walk(self.dfa.initial, vocab.text_bytes(output_ids[:w]))
        before_last = self.dfa.walk(start, vocab.text_bytes(new[:-1]))
        if before_last is None:
            return None
        kept_bytes = data[: len(data) - len(vocab.token_bytes[new[-1]])]
        if (
            len(vocab.token_bytes[new[-1]]) <= len(data) - len(head)
            and _last_char_end(kept_bytes) == len(kept_bytes)  # never stop inside a character
            and self._extendable_by_model(before_last, new[-1])
        ):
            ids.pop()
        if len(ids) <= len(output_ids):
            return None
        kept = 0
        while kept < len(output_ids) and output_ids[kept] == ids[kept]:
            kept += 1
        end = self.dfa.walk(self.dfa.initial, vocab.text_bytes(ids))
        return Jump(ids, kept, end)

    def _extendable_by_model(self, state: int, token: int) -> bool:
        key = (state, token)
        hit = self._extendable.get(key)
        if hit is None:
            prefix = self.vocab.token_bytes[token]
            tb = self.vocab.token_bytes
            hit = self._extendable[key] = any(
                len(tb[u]) > len(prefix) and tb[u].startswith(prefix) for u in self.index.allowed[state]
            )
        return hit


def forced_chains(dfa: DFA) -> dict[int, tuple[bytes, int]]:
    """For every state with exactly one way on: the longest forced byte string from it and the state
    after it. A chain stops at an accepting state (the match may end there) and at any branching state.
    In a trimmed DFA a chain cannot loop: a cycle of single-exit, non-accepting states never accepts."""
    single = {
        s: next(iter(moves.items()))
        for s, moves in enumerate(dfa.transitions)
        if len(moves) == 1 and not dfa.is_accepting(s)
    }
    chains: dict[int, tuple[bytes, int]] = {}
    for s in single:
        out, cur = bytearray(), s
        while cur in single:
            b, cur = single[cur]
            out.append(b)
        chains[s] = (bytes(out), cur)
    return chains


@dataclass
class CompressedFSM:
    """The DFA with every chain of singular transitions merged into one edge (for pictures and counts).
    edges[state] = [(bytes that start the edge, forced bytes after them, target state)]."""

    initial: int
    accepting: frozenset[int]
    edges: dict[int, list[tuple[frozenset[int], bytes, int]]]

    @property
    def num_states(self) -> int:
        return len(self.edges)


def compress(dfa: DFA) -> CompressedFSM:
    chains = forced_chains(dfa)
    edges: dict[int, list[tuple[frozenset[int], bytes, int]]] = {}
    todo = [dfa.initial]
    while todo:
        s = todo.pop()
        if s in edges:
            continue
        by_target: dict[int, set[int]] = {}
        for b, t in dfa.transitions[s].items():
            by_target.setdefault(t, set()).add(b)
        edges[s] = []
        for t, first in sorted(by_target.items()):
            forced, end = chains.get(t, (b"", t))
            edges[s].append((frozenset(first), forced, end))
            todo.append(end)
    return CompressedFSM(dfa.initial, dfa.accepting, edges)


def _is_continuation(data: bytes | None) -> bool:
    return bool(data) and 0x80 <= data[0] < 0xC0


def _last_char_end(data: bytes) -> int:
    """Length of the longest prefix of data that does not end inside a UTF-8 character."""
    i = len(data) - 1
    while i >= 0 and 0x80 <= data[i] < 0xC0 and len(data) - i < 4:
        i -= 1
    if i < 0:
        return len(data)  # no lead byte at all: let decoding refuse it
    lead = data[i]
    need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    return len(data) if len(data) - i >= need else i


def choice_regex(choices: list[str]) -> str:
    return "|".join(escape(c) for c in choices)


def escape(text: str) -> str:
    """A regex matching text literally (only the metacharacters get a backslash)."""
    return "".join("\\" + c if c in "\\.^$*+?{}[]|()" else c for c in text)


def params_key(params) -> tuple:
    """A hashable name for a request's constraint, so that a schema is translated once, not per request
    (a pydantic model is named by its class, a dict by its canonical JSON)."""
    if params.regex is not None:
        return ("regex", params.regex)
    if params.choice is not None:
        return ("choice", tuple(params.choice))
    schema = params.json_schema
    if isinstance(schema, (str, bool)) or hasattr(schema, "model_json_schema"):
        return ("json_schema", schema)
    return ("json_schema", json.dumps(schema, sort_keys=True, default=repr))


def params_regex(params) -> str:
    """The regex a request's SamplingParams ask for (exactly one of regex, json_schema, choice)."""
    if params.regex is not None:
        return params.regex
    if params.json_schema is not None:
        from minillm.constrained.json_schema import json_schema_to_regex

        return json_schema_to_regex(params.json_schema)
    return choice_regex(params.choice)


class GuideFactory:
    """Compiles and caches guides by (regex, strategy) for one tokenizer; the vocabulary and its trie
    are built once."""

    def __init__(self, tokenizer, eos_token_ids, strategy: str, max_cached: int = 64):
        if strategy not in STRATEGIES:
            raise ValueError(f"constrained_decoding must be one of {STRATEGIES}, got {strategy!r}")
        self.tokenizer, self.eos_token_ids, self.strategy = tokenizer, eos_token_ids, strategy
        self.max_cached = max_cached
        self._cache: OrderedDict[str, Guide] = OrderedDict()
        self._by_params: OrderedDict[tuple, Guide] = OrderedDict()
        self._vocab: Vocabulary | None = None
        self._trie: VocabTrie | None = None

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = Vocabulary.from_tokenizer(self.tokenizer, self.eos_token_ids)
        return self._vocab

    def guide(self, regex: str) -> Guide:
        hit = self._cache.get(regex)
        if hit is not None:
            self._cache.move_to_end(regex)
            return hit
        guide = make_guide(compile_regex(regex), self.vocab, self.strategy, self._get_trie())
        self._cache[regex] = guide
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return guide

    def guide_for(self, params) -> Guide:
        """The guide for a request's SamplingParams (cached by its constraint)."""
        key = params_key(params)
        hit = self._by_params.get(key)
        if hit is None:
            hit = self._by_params[key] = self.guide(params_regex(params))
            if len(self._by_params) > self.max_cached:
                self._by_params.popitem(last=False)
        return hit

    def _get_trie(self) -> VocabTrie | None:
        if self.strategy == "naive":
            return None
        if self._trie is None:
            self._trie = VocabTrie(self.vocab)
        return self._trie


def make_guide(dfa: DFA, vocab: Vocabulary, strategy: str, trie: VocabTrie | None = None) -> Guide:
    if strategy == "naive":
        return NaiveGuide(dfa, vocab)
    cls = IndexedGuide if strategy == "indexed" else CompressedGuide
    return cls(dfa, vocab, trie)


def mask_logits(logits: torch.Tensor, guides: list[tuple[Guide, int] | None]) -> torch.Tensor:
    """logits (B, V): rows with a (guide, state) keep only that state's allowed tokens."""
    rows = [i for i, g in enumerate(guides) if g is not None]
    if not rows:
        return logits
    V = logits.shape[-1]
    bias = torch.full((len(rows), V), float("-inf"), dtype=logits.dtype, device=logits.device)
    for r, i in enumerate(rows):
        guide, state = guides[i]
        ids = guide.allowed_ids(state, logits.device)  # token ids < the tokenizer's size <= V
        bias[r].index_fill_(0, ids, 0.0)
    logits = logits.clone()
    logits[rows] += bias
    return logits
