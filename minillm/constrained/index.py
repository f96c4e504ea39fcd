"""From a byte-level DFA to tokens: which token ids may come next in each state, and where they lead.

A DFA reads bytes; a model emits tokens, each a short byte string. A token is allowed in DFA state s
when walking its bytes from s never falls off the automaton, and it leads to the state where the walk
ends. Outlines' insight: this depends only on (s, token), so it can be computed once per pattern and
tokenizer — the **token index** — instead of at every decoding step.

Walking every token from every state repeats work: tokens share prefixes (`"na`, `"nam`, `"name`). A
trie of the vocabulary's byte strings walks each shared prefix once, and a branch is abandoned as soon
as the DFA has no transition for a byte, so a state that allows only a few bytes visits only a few trie
nodes.

EOS is allowed exactly in accepting states. A state reached by tokens that allows neither a token nor
EOS would be a dead end; the index refuses such a pattern/vocabulary pair up front.

Checked by: pytest -m ch5 -k index.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from minillm.constrained.regex import DFA


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte is shown as a printable character (printable ASCII and
    Latin-1 map to themselves, the other bytes to code points from 256 up, in byte order)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_OF_CHAR = {c: b for b, c in _bytes_to_unicode().items()}


def _byte_level_bytes(token: str) -> bytes | None:
    try:
        return bytes(_BYTE_OF_CHAR[c] for c in token)
    except KeyError:
        return None


def _metaspace_bytes(token: str) -> bytes:
    """SentencePiece-style vocabularies: '▁' is a space, '<0xAB>' a raw byte."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("\u2581", " ").encode("utf-8")


@dataclass(eq=False)
class Vocabulary:
    """The byte string of every token id (None for special tokens, which a constraint never allows),
    the EOS ids, and the tokenizer's encode (jump-forward re-tokenizes forced text)."""

    token_bytes: list[bytes | None]
    eos_token_ids: frozenset[int]
    encode: Callable[[str], list[int]] = field(repr=False)

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_token_ids) -> Vocabulary:
        """tokenizer: minillm.tokenizer.Tokenizer (byte-level BPE or SentencePiece-style)."""
        hf = tokenizer.hf
        vocab = hf.get_vocab(with_added_tokens=True)
        special = set(hf.get_added_tokens_decoder())
        # SentencePiece-style vocabularies ('▁' for a space; raw bytes as <0x0A> with byte fallback);
        # byte-level BPE maps every byte to a printable character
        metaspace = "<0x0A>" in vocab or type(hf.decoder).__name__ == "Metaspace"
        to_bytes = _metaspace_bytes if metaspace else _byte_level_bytes
        token_bytes: list[bytes | None] = [None] * (max(vocab.values()) + 1)
        for text, i in vocab.items():
            token_bytes[i] = None if i in special else to_bytes(text)
        return cls(
            token_bytes,
            frozenset(eos_token_ids),
            lambda text: tokenizer.encode(text, add_special_tokens=False),
        )

    def __len__(self) -> int:
        return len(self.token_bytes)

    def text_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.token_bytes[t] or b"" for t in ids)


class VocabTrie:
    """The vocabulary's byte strings as a trie: node 0 is the root; tokens[n] end at node n."""

    def __init__(self, vocab: Vocabulary):
        self.children: list[dict[int, int]] = [{}]
        self.tokens: list[list[int]] = [[]]
        for token, data in enumerate(vocab.token_bytes):
            if not data:
                continue
            node = 0
            for b in data:
                nxt = self.children[node].get(b)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][b] = nxt
                    self.children.append({})
                    self.tokens.append([])
                node = nxt
            self.tokens[node].append(token)

    def walk(self, dfa: DFA, state: int) -> dict[int, int]:
        """{token: next state} for every token whose bytes the DFA accepts from state."""
        out: dict[int, int] = {}
        stack = [(0, state)]
        while stack:
            node, s = stack.pop()
            kids, moves = self.children[node], dfa.transitions[s]
            # follow the smaller side: a state that allows few bytes visits few trie branches
            pairs = (
                ((b, kids[b]) for b in moves if b in kids)
                if len(moves) < len(kids)
                else ((b, n) for b, n in kids.items() if b in moves)
            )
            for b, child in pairs:
                nxt = moves[b]
                for token in self.tokens[child]:
                    out[token] = nxt
                stack.append((child, nxt))
        return out


class TokenIndex:
    """For every DFA state reachable by tokens from the start: the allowed tokens and their next states."""

    def __init__(self, dfa: DFA, vocab: Vocabulary, trie: VocabTrie | None = None):
        t0 = time.perf_counter()
        self.dfa, self.vocab = dfa, vocab
        trie = trie or VocabTrie(vocab)
        self.allowed: dict[int, dict[int, int]] = {}
        queue = deque([dfa.initial])
        while queue:
            state = queue.popleft()
            if state in self.allowed:
                continue
            moves = self.allowed[state] = trie.walk(dfa, state)
            if not moves and not dfa.is_accepting(state):
                raise ValueError(
                    f"constraint {dfa.pattern!r}: no token of this vocabulary can continue from a state"
                    " that is reachable (the pattern needs bytes no token spells)"
                )
            queue.extend(s for s in set(moves.values()) if s not in self.allowed)
        self.build_seconds = time.perf_counter() - t0

    @property
    def num_states(self) -> int:
        return len(self.allowed)

    def allowed_tokens(self, state: int) -> list[int]:
        """Token ids allowed in state, EOS included where the DFA accepts."""
        ids = list(self.allowed[state])
        if self.dfa.is_accepting(state):
            ids.extend(sorted(self.vocab.eos_token_ids))
        return ids

    def next_state(self, state: int, token: int) -> int | None:
        return self.allowed[state].get(token)
