"""Chapter 0: train the default model, a small Llama, on the Python standard library; export it for HF.

The idea: a decoder-only language model reads tokens left to right and is trained on one task,
predicting the next token (cross-entropy on every position of random 1024-token windows). Everything
the engine does in later chapters (KV cache, paged blocks, prefix sharing, constrained sampling) serves
this one forward pass. The architecture is transformers' own LlamaForCausalLM, so the result is a
standard checkpoint that `AutoModelForCausalLM.from_pretrained` and minillm both load.

Run (the shipped checkpoint came from the first line, on one H100, ~2 min; see README.md):
    python chapters/ch00_model/train.py --device cuda --out minillm/assets/pystd-llama
    python chapters/ch00_model/train.py --device cuda --minutes 7   # as many steps as fit in 7 minutes
    python chapters/ch00_model/train.py --quick      # CPU smoke test, < 1 min, writes results/ch00_quick/
Token streams come from corpus.py (--data DIR); when DIR has none they are built from this Python's stdlib.
Without --out nothing shipped is touched: the checkpoint and its loss log (JSON + PNG) go to results/.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ASSET_DIR = REPO / "minillm/assets/pystd-llama"
EOS_ID = 0  # <|endoftext|>, the tokenizer's only special token


@dataclass
class TrainConfig:
    # model: ~11.7M parameters, 23.4 MB in bfloat16, so the folder stays under 25 MB
    vocab_size: int = 8192
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 6  # head_dim 64, the shape later chapters' kernels are written for
    num_key_value_heads: int = 2  # GQA: 3 query heads share each KV head, a 3x smaller KV cache
    intermediate_size: int = 896  # 2.33x hidden (multiple of 128); 1024 would overrun the size budget
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    # optimisation
    seq_len: int = 1024  # train at the full context so every position the engine serves was seen
    batch_size: int = 64  # 64 x 1024 = 65k tokens a step
    lr: float = 2e-3  # peak; small models take a large AdamW step
    min_lr: float = 2e-4  # cosine floor, 10% of peak
    warmup_steps: int = 200
    weight_decay: float = 0.2  # on matrices only, not on norms; 0.2 beat 0.1 in the sweep (README)
    grad_clip: float = 1.0
    dropout: float = 0.2  # on each residual branch: 2000 steps see the 8.4M-token corpus ~16 times
    max_steps: int = 2000  # held-out loss stops improving near here (README); 0: fill --minutes
    eval_interval: int = 100
    seed: int = 1337


QUICK = dict(  # the smoke-test model: same code path, tiny shapes
    hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    intermediate_size=256, seq_len=64, batch_size=8, warmup_steps=5, max_steps=30, eval_interval=10,
    dropout=0.0,
)


def build_model(cfg: TrainConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.hidden_size // cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings, rope_theta=cfg.rope_theta, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=EOS_ID, eos_token_id=EOS_ID, use_cache=True,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def add_residual_dropout(model, p: float) -> None:
    """GPT-2-style dropout on the attention and MLP outputs, in training mode only. Hooks, so the
    exported model is still a plain LlamaForCausalLM with nothing to undo."""

    def hook(module, args, output):
        if isinstance(output, tuple):  # attention returns (hidden, weights)
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def compile_or_eager(model, data: torch.Tensor, cfg: TrainConfig, autocast):
    """torch.compile the training forward (fuses norms, RoPE, SiLU); fall back to eager if it fails."""
    compiled = torch.compile(model)
    x = data[: cfg.batch_size * cfg.seq_len].long().view(cfg.batch_size, cfg.seq_len)  # (B, T)
    try:
        with autocast():
            compiled(input_ids=x, use_cache=False).logits.float().mean().backward()
    except Exception as e:  # any compiler failure: train eagerly rather than not at all
        print(f"torch.compile failed, training eagerly: {type(e).__name__}: {e}")
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


def load_streams(data_dir: Path, max_files: int | None) -> dict:
    """uint16 token streams from corpus.py; built here from this Python's stdlib if absent."""
    if not (data_dir / "meta.json").exists():
        import corpus

        corpus.build(data_dir, ASSET_DIR / "tokenizer.json", max_files)
    meta = json.loads((data_dir / "meta.json").read_text())
    streams = {k: np.fromfile(data_dir / f"{k}.bin", dtype=np.uint16) for k in meta["streams"]}
    return {"meta": meta, **streams}


def token_byte_lengths(vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes each token stands for (EOS: 0), to turn nats/token into nats/byte."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ASSET_DIR / "tokenizer.json"))
    # byte-level BPE spells bytes as 256 printable characters; invert that map (GPT-2's scheme)
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = sorted(set(range(256)) - set(keep))
    char_of = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(rest)}
    byte_of = {c: b for b, c in char_of.items()}
    lens = torch.zeros(vocab_size, dtype=torch.float64)
    for piece, i in tok.get_vocab().items():
        if i != EOS_ID and i < vocab_size:
            lens[i] = sum(1 for c in piece if c in byte_of)
    return lens


def get_batch(data: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    ix = torch.randint(len(data) - cfg.seq_len - 1, (cfg.batch_size,), generator=gen, device=data.device)
    win = data[ix[:, None] + torch.arange(cfg.seq_len + 1, device=data.device)].long()  # (B, T+1)
    return win[:, :-1], win[:, 1:]  # inputs (B, T), next-token targets (B, T)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def evaluate(model, data: torch.Tensor, byte_len: torch.Tensor, cfg: TrainConfig, autocast) -> dict:
    """Loss over a whole held-out stream in non-overlapping windows: nats/token and nats/byte."""
    model.eval()
    T, nats, n_tok, n_bytes = cfg.seq_len, 0.0, 0, 0.0
    starts = list(range(0, len(data) - 1, T))
    for i in range(0, len(starts), 32):
        chunk = [data[s : s + T + 1] for s in starts[i : i + 32]]
        for win in ([c for c in chunk if len(c) == T + 1], [c for c in chunk if len(c) < T + 1]):
            if not win:
                continue
            win = torch.stack([w.long() for w in win])  # (b, T'+1)
            with autocast():
                logits = model(input_ids=win[:, :-1], use_cache=False).logits  # (b, T', V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), win[:, 1:].flatten(), reduction="sum")
            nats += loss.item()
            n_tok += win[:, 1:].numel()
            n_bytes += byte_len[win[:, 1:].flatten().cpu()].sum().item()
    model.train()
    return {"loss": nats / n_tok, "ppl": math.exp(nats / n_tok), "nats_per_byte": nats / n_bytes,
            "bits_per_byte": nats / n_bytes / math.log(2), "tokens": n_tok}


def export(model, out: Path, dtype: torch.dtype, shard_mb: int | None, rope_theta: float) -> None:
    """A standard HF checkpoint: config.json, safetensors, generation_config.json, tokenizer files."""
    from transformers import GenerationConfig

    out.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu", dtype)
    model.generation_config = GenerationConfig(bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    kw = {"max_shard_size": f"{shard_mb}MB"} if shard_mb else {}
    model.save_pretrained(out, **kw)
    config = json.loads((out / "config.json").read_text())
    config["rope_theta"] = rope_theta  # also at top level (transformers 5 nests it), for older readers
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (ASSET_DIR / f).resolve() != (out / f).resolve():
            shutil.copy(ASSET_DIR / f, out / f)


def plot(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = log["train"]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train (batch)")
    for key, style in (("val_code", "o-"), ("val_text", "s--")):
        ax.plot([r["step"] for r in log["val"]], [r[key]["loss"] for r in log["val"]], style, ms=3,
                label=f"held-out {key[4:]}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", ylim=(0, 6),
           title=f"pystd-llama, {log['n_params'] / 1e6:.1f}M params, {log['device_name']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--minutes", type=float, help="fill this time budget (compile included) instead of max_steps")
    p.add_argument("--steps", type=int, help="fixed number of steps instead of --minutes")
    p.add_argument("--quick", action="store_true", help="tiny model, 30 CPU steps on 60 files (smoke test)")
    p.add_argument("--data", type=Path, help="token streams from corpus.py (default .data/ch00)")
    p.add_argument("--out", type=Path, help="checkpoint folder (default: the asset; --quick: results/)")
    p.add_argument("--log", type=Path, help="path prefix of the loss log .json and curve .png")
    p.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--shard-mb", type=int, help="split the safetensors file into shards of this size")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a TrainConfig field")
    args = p.parse_args()

    cfg = TrainConfig(**(QUICK if args.quick else {}))
    for item in args.set:
        key, value = item.split("=", 1)
        setattr(cfg, key, type(getattr(cfg, key))(value))  # AttributeError names an unknown field
    if args.minutes:
        cfg.max_steps = 0
    if args.steps:
        cfg.max_steps = args.steps
    device = torch.device("cpu" if args.quick and args.device == "cuda" else args.device)
    out = args.out or REPO / ("results/ch00_quick" if args.quick else "results/ch00_model")
    stem = f"_train_{device.type}_{datetime.date.today().isoformat()}"  # the log lies beside, never inside
    log_prefix = args.log or (out.parent / f"{out.name}{stem}" if args.quick else REPO / f"results/ch00{stem}")
    data_dir = args.data or (out / "data" if args.quick else REPO / ".data/ch00")

    torch.manual_seed(cfg.seed)
    torch.set_float32_matmul_precision("high")  # TF32 for any float32 matmul left outside autocast
    streams = load_streams(data_dir, 60 if args.quick else None)
    train_data = torch.from_numpy(streams["train"].astype(np.int32)).to(device)
    val = {k: torch.from_numpy(streams[k].astype(np.int32)).to(device) for k in ("val_code", "val_text")}
    byte_len = token_byte_lengths(cfg.vocab_size)

    model = build_model(cfg).to(device)
    if cfg.dropout:
        add_residual_dropout(model, cfg.dropout)
    n_params = sum(p.numel() for p in model.parameters())  # tied: the embedding is counted once
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay,
                            "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    if device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # bf16 matmuls, fp32 master weights
    else:
        autocast = lambda: torch.autocast("cpu", enabled=False)  # float32 on the CPU
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    step_fn = model if args.no_compile or device.type != "cuda" else compile_or_eager(model, train_data, cfg, autocast)

    print(f"device {device} | params {n_params / 1e6:.2f}M | train tokens {len(train_data):,} | "
          f"batch {cfg.batch_size}x{cfg.seq_len}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    log = {"config": asdict(cfg), "n_params": n_params, "device": device.type, "device_name": device_name,
           "torch": torch.__version__, "python": platform.python_version(),
           "corpus": streams["meta"], "train": [], "val": []}
    budget_s = (args.minutes or math.inf) * 60
    best, best_state = math.inf, None
    step, t_calib = 0, None
    while cfg.max_steps == 0 or step < cfg.max_steps:
        if cfg.max_steps == 0 and step == 10:
            t_calib = time.perf_counter()  # compilation is over by now
        if cfg.max_steps == 0 and step == 40:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - t_calib) / 30
            left = budget_s - (time.perf_counter() - t0)
            cfg.max_steps = step + int(0.92 * left / per_step)  # ~8% of the budget left for evaluation
            print(f"{per_step * 1e3:.1f} ms/step -> max_steps {cfg.max_steps}")
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train_data, cfg, gen)
        with autocast():
            logits = step_fn(input_ids=x, use_cache=False).logits  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        if step % 10 == 0 or step == 1:
            log["train"].append({"step": step, "loss": loss.item(), "lr": lr,
                                 "time_s": round(time.perf_counter() - t0, 2)})
        last = cfg.max_steps and step == cfg.max_steps
        if step % cfg.eval_interval == 0 or last:
            row = {"step": step, "time_s": round(time.perf_counter() - t0, 2), "tokens_seen":
                   step * cfg.batch_size * cfg.seq_len} | {k: evaluate(model, v, byte_len, cfg, autocast)
                                                           for k, v in val.items()}
            log["val"].append(row)
            score = row["val_code"]["loss"]
            if score < best:  # keep the best held-out weights: the corpus is small, later steps may overfit
                best = score
                best_state = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
                log["best"] = row
            print(f"step {step:5d} | lr {lr:.2e} | train {loss.item():.3f} | val code {score:.3f} "
                  f"text {row['val_text']['loss']:.3f} | {row['time_s']:.0f}s")
        if not last and time.perf_counter() - t0 > 1.1 * budget_s and not args.steps and not args.quick:
            cfg.max_steps = step + 1  # out of time: one more step, evaluated, then stop
    log["train_time_s"] = round(time.perf_counter() - t0, 1)
    log["steps"] = step
    log["tokens_seen"] = step * cfg.batch_size * cfg.seq_len
    log["epochs"] = round(log["tokens_seen"] / len(train_data), 2)

    model.load_state_dict(best_state)
    export(model, out, getattr(torch, args.save_dtype), args.shard_mb, cfg.rope_theta)
    log_prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{log_prefix}.json").write_text(json.dumps(log, indent=1) + "\n")
    plot(log, Path(f"{log_prefix}.png"))
    b = log["best"]
    code, text = b["val_code"], b["val_text"]
    print(f"\n| steps | tokens seen | epochs | time | best step | val code nats/tok (ppl) | bits/byte | "
          f"val text nats/tok |\n| {step} | {log['tokens_seen'] / 1e6:.1f}M | {log['epochs']} | "
          f"{log['train_time_s']:.0f}s | {b['step']} | {code['loss']:.3f} ({code['ppl']:.2f}) | "
          f"{code['bits_per_byte']:.3f} | {text['loss']:.3f} |")
    print(f"checkpoint -> {out}\nlog -> {log_prefix}.json/.png")


if __name__ == "__main__":
    main()
