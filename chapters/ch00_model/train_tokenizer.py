"""Chapter 0: train the default model's tokenizer, a byte-level BPE, on the training split of the corpus.

The idea: byte-level BPE (as in GPT-2) starts from the 256 byte values, so any string, any language
or emoji, encodes without an unknown token, and then greedily merges the most frequent adjacent pairs
until the vocabulary is full. Tokens end up as multi-character pieces ("    return", " self", "def")
whose edges do not line up with characters or grammar: exactly what constrained decoding (chapter 5)
has to cope with. One special token, <|endoftext|>, ends every document; there is no separate BOS.

Run:
    python chapters/ch00_model/train_tokenizer.py             # writes minillm/assets/pystd-llama/tokenizer*
    python chapters/ch00_model/train_tokenizer.py --out /tmp/tok --vocab-size 4096
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from corpus import EOS, load_documents, nbytes, split_documents
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ASSET_DIR = Path(__file__).resolve().parents[2] / "minillm/assets/pystd-llama"
VOCAB_SIZE = 8192  # 256 bytes + 1 special + 7935 merges: ~4 bytes/token on code; 8192*384 embedding rows
MODEL_MAX_LENGTH = 1024  # the model's max_position_embeddings
ROUND_TRIP_EXTRA = ["héllo 世界 🚀", "naïve café — “quotes” ½ ∑ x² ≠ ∞", "\t\n  \r\n\x00 trailing  ", EOS]


def build_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # GPT-2's split regex (words, numbers, punctuation runs, whitespace runs), bytes mapped to printable
    # characters; no normalizer, so decode(encode(s)) == s for every string.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def save_hf(tok: Tokenizer, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json: what AutoTokenizer.from_pretrained(out) reads."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS,  # as in GPT-2, one token plays both roles; nothing is added on encode
        "eos_token": EOS,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,  # keep " ." and " 's" exactly as generated
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def check_round_trip(out: Path, samples: list[str]) -> None:
    """decode(encode(s)) == s through the raw tokenizer and through transformers' AutoTokenizer."""
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(out)
    for s in samples:
        ids = raw.encode(s, add_special_tokens=False).ids
        assert raw.decode(ids, skip_special_tokens=False) == s, s[:80]
        hf_ids = hf.encode(s, add_special_tokens=True)
        assert hf_ids == ids, f"transformers adds or changes tokens: {s[:80]!r}"
        assert hf.decode(hf_ids) == s, s[:80]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ASSET_DIR)
    p.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    p.add_argument("--max-files", type=int, help="only the first N files (smoke tests)")
    args = p.parse_args()

    docs, _ = load_documents(args.max_files)
    train, val = split_documents(docs)
    t0 = time.perf_counter()
    tok = build_tokenizer([d.text for d in train], args.vocab_size)
    print(f"trained vocab {tok.get_vocab_size()} on {len(train)} docs, {nbytes(train):,} B "
          f"in {time.perf_counter() - t0:.1f}s")
    save_hf(tok, args.out)

    rng = random.Random(0)
    snippets = []
    for d in rng.sample(val, min(len(val), 40)):
        for _ in range(5):
            i = rng.randrange(len(d.text))
            snippets.append(d.text[i : i + rng.randrange(1, 400)])
    check_round_trip(args.out, snippets + ROUND_TRIP_EXTRA)
    print(f"round trip ok on {len(snippets) + len(ROUND_TRIP_EXTRA)} strings (non-ASCII included)")
    for kind in ("code", "text"):
        group = [d for d in val if d.kind == kind]
        n_tok = sum(len(e.ids) for e in tok.encode_batch([d.text for d in group], add_special_tokens=False))
        n_bytes = nbytes(group)
        print(f"held-out {kind}: {n_bytes:,} B / {n_tok:,} tokens = {n_bytes / n_tok:.2f} B/token")


if __name__ == "__main__":
    main()
