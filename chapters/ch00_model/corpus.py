"""Chapter 0: the training corpus for the default model, built from text every Python install has.

The idea: a language model needs text, and the machine running this already holds ~30 MB of it that
needs no download: the standard library's own `.py` sources (code, comments, docstrings) and the
English reference topics that `pydoc` ships in `pydoc_data.topics`. We read them in a fixed order,
hold out a few whole documents for validation (by file, so no held-out line was ever trained on),
and write token streams that train.py reads.

Run:
    python chapters/ch00_model/corpus.py                     # statistics only
    python chapters/ch00_model/corpus.py --out .data/ch00    # + tokenized train/val streams
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"  # the only special token: end of document, also the separator between documents
VAL_FRACTION = 0.02  # share of documents held out, per kind (code / English)
MIN_VAL_DOCS = 4  # at least this many held-out documents of each kind
SEED = 1337

# Skipped: installed third-party packages, caches, the build-specific sysconfig dump, and the .py copy
# of the pydoc topics (added once, below, as English text).
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
SKIP_FILES = {"pydoc_data/topics.py"}
SKIP_PREFIXES = ("_sysconfigdata",)


@dataclass
class Document:
    name: str  # "code:json/decoder.py" or "text:lambda"
    kind: str  # "code" | "text"
    text: str


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def list_sources(root: Path) -> list[str]:
    """Sorted relative paths of the stdlib's .py files, test suites included (see README)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for f in filenames:
            if not f.endswith(".py") or f.startswith(SKIP_PREFIXES):
                continue
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel not in SKIP_FILES:
                found.append(rel)
    return sorted(found)


def load_documents(max_files: int | None = None) -> tuple[list[Document], dict]:
    """All documents in a fixed order, and counts of what was skipped."""
    root = stdlib_dir()
    paths = list_sources(root)[:max_files]
    docs, not_utf8 = [], []
    for rel in paths:
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            not_utf8.append(rel)  # a handful of tests are deliberately in other encodings
            continue
        if text.strip():
            docs.append(Document(f"code:{rel}", "code", text))
    from pydoc_data.topics import topics

    for key in sorted(topics)[: None if max_files is None else max(2, max_files // 10)]:
        docs.append(Document(f"text:{key}", "text", topics[key]))
    return docs, {"stdlib": str(root), "py_files_listed": len(paths), "skipped_not_utf8": not_utf8}


def split_documents(docs: list[Document], seed: int = SEED) -> tuple[list[Document], list[Document]]:
    """Hold out whole documents: a seeded shuffle per kind, the first VAL_FRACTION go to validation."""
    train, val = [], []
    rng = random.Random(seed)
    for kind in ("code", "text"):
        group = [d for d in docs if d.kind == kind]
        rng.shuffle(group)
        n_val = max(MIN_VAL_DOCS, round(VAL_FRACTION * len(group))) if len(group) > MIN_VAL_DOCS else 1
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)  # mix code and English in the training stream
    return train, val


def encode_stream(tokenizer, docs: list[Document]) -> np.ndarray:
    """Token ids of the documents, each followed by EOS, as one flat uint16 array."""
    eos_id = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for enc in tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos_id)
    assert tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max
    return np.asarray(ids, dtype=np.uint16)


def nbytes(docs: list[Document]) -> int:
    return sum(len(d.text.encode("utf-8")) for d in docs)


def _relative(path: Path) -> str:
    """The path from the repository root when it lies inside it, so logs do not name a machine."""
    root = Path(__file__).resolve().parents[2]
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def build(out_dir: Path, tokenizer_path: Path, max_files: int | None = None) -> dict:
    """Write train.bin, val_code.bin, val_text.bin (uint16 token ids) and meta.json into out_dir."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    docs, info = load_documents(max_files)
    train, val = split_documents(docs)
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = {
        "train": train,
        "val_code": [d for d in val if d.kind == "code"],
        "val_text": [d for d in val if d.kind == "text"],
    }
    meta = {
        "python": platform.python_version(),
        "stdlib": info["stdlib"],
        "py_files_listed": info["py_files_listed"],
        "skipped_not_utf8": info["skipped_not_utf8"],
        "seed": SEED,
        "val_fraction": VAL_FRACTION,
        "tokenizer": _relative(tokenizer_path),
        "vocab_size": tokenizer.get_vocab_size(),
        "streams": {},
    }
    for name, group in streams.items():
        ids = encode_stream(tokenizer, group)
        ids.tofile(out_dir / f"{name}.bin")
        meta["streams"][name] = {
            "documents": len(group),
            "code_files": sum(d.kind == "code" for d in group),
            "text_topics": sum(d.kind == "text" for d in group),
            "bytes": nbytes(group),
            "tokens": int(ids.size),
            "bytes_per_token": round(nbytes(group) / max(1, ids.size - len(group)), 3),
        }
    meta["val_documents"] = sorted(d.name for d in val)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write token streams here (needs the trained tokenizer)")
    p.add_argument("--tokenizer", type=Path, default=Path(__file__).resolve().parents[2]
                   / "minillm/assets/pystd-llama/tokenizer.json")
    p.add_argument("--max-files", type=int, help="only the first N files (smoke tests)")
    args = p.parse_args()
    if args.out:
        meta = build(args.out, args.tokenizer, args.max_files)
        print(json.dumps({k: v for k, v in meta.items() if k != "val_documents"}, indent=1))
        return
    docs, info = load_documents(args.max_files)
    train, val = split_documents(docs)
    print(f"python {platform.python_version()} ({sys.executable}), stdlib {info['stdlib']}")
    print(f"py files listed {info['py_files_listed']}, not UTF-8 (skipped) {len(info['skipped_not_utf8'])}")
    for name, group in (("train", train), ("val", val)):
        code = [d for d in group if d.kind == "code"]
        text = [d for d in group if d.kind == "text"]
        print(f"{name:5s}: {len(code)} code files {nbytes(code):,} B, {len(text)} topics {nbytes(text):,} B")


if __name__ == "__main__":
    main()
