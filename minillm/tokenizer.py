"""Tokenizer wrapper and incremental detokenization.

Streaming text one token at a time is subtle with byte-level BPE: a multi-byte character (é, 世, 🚀)
can be split across tokens, and decoding a token on its own gives U+FFFD. The incremental
detokenizer (the algorithm vLLM uses) decodes a short window of recent tokens twice, before and after
the new one, and only emits text once it no longer ends in a half character. find_tokenizer picks the
folder an engine's tokenizer comes from.

Checked by: pytest -m ch1 -k detok.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from minillm.config import DEFAULT_MODEL


class Tokenizer:
    """tokenizer.json through the `tokenizers` library; special tokens from tokenizer_config.json."""

    def __init__(self, path: str | Path):
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"tokenizer={str(path)!r}: no tokenizer.json in the folder")
        self.path = path
        self._tok = HFTokenizer.from_file(str(file))
        cfg_file = path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        self.eos_token_id = self._special_id(cfg.get("eos_token"))
        self.bos_token_id = self._special_id(cfg.get("bos_token"))

    def _special_id(self, token) -> int | None:
        if isinstance(token, dict):  # older tokenizer_config.json files store AddedToken dicts
            token = token.get("content")
        return None if token is None else self._tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def hf(self) -> HFTokenizer:
        """The underlying `tokenizers` object (constrained decoding reads its vocabulary)."""
        return self._tok

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


def find_tokenizer(tokenizer: str | None, model_dir: Path | None) -> Tokenizer | None:
    """An explicit tokenizer folder, else the checkpoint's own, else the default model's (named
    dummy configs have none of their own; their vocabularies are larger, so its ids are valid)."""
    if tokenizer is not None:
        return Tokenizer(tokenizer)
    if model_dir is not None and (model_dir / "tokenizer.json").is_file():
        return Tokenizer(model_dir)
    if model_dir is None and (Path(DEFAULT_MODEL) / "tokenizer.json").is_file():
        return Tokenizer(DEFAULT_MODEL)
    return None


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, never emitting half a character.

    prefix_offset..read_offset is a window of already-emitted tokens kept as context, because the text
    of a token can depend on its neighbours (leading spaces, byte merges).
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-6:])  # a little left context is enough
        self.read_offset = len(self.ids)
        self.prefix_offset = max(self.read_offset - 5, 0)

    def step(self, token_id: int) -> str:
        """Append one token and return the text that is now certain."""
        self.ids.append(token_id)
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # an incomplete character (or a special token): wait for more bytes
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """At the end of a request: whatever is still pending (a truly invalid byte stays U+FFFD)."""
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
