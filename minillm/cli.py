"""The `minillm` command.

minillm generate --stage naive "def fib(n):"          # text out, with latency metrics
minillm generate --regex "[0-9]{3}" "n = "             # constrained (chapter 5): also --json-schema, --choice
minillm generate --kv-cache-tokens 4096 --max-model-len 512 "import os"   # engine knobs over the stage preset
minillm bench --chapter 1 --quick                      # one chapter's benchmark
minillm bench --all --quick                            # every landed chapter (the README's main job)
minillm bench --chapter 1 --device cuda --model qwen3-0.6b --load-format dummy
minillm serve --stage unified --port 8000              # OpenAI-compatible server (chapter 8)
minillm bench serve --base-url http://127.0.0.1:8000 --request-rate 4    # serving benchmark, any server
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# `generate` flags that set EngineConfig fields (minillm/config.py); left out, the stage preset decides
ENGINE_FLAGS = {
    "kv_cache_tokens": "KV memory budget in token slots, shared by all sequences",
    "block_size": "paged KV block size in tokens (chapter 2)",
    "max_num_seqs": "most sequences in one batch",
    "max_num_batched_tokens": "most tokens in one forward pass",
    "max_model_len": "longest sequence, prompt and output together",
}


def _json_schema(value: str | None):
    """--json-schema: the path of a .json file holding the schema, or the schema itself as JSON."""
    if value is None:
        return None
    path = Path(value)
    if value.endswith(".json") and not path.is_file():
        raise ValueError(f"--json-schema: no such file {value!r}")
    text, where = (
        (path.read_text(encoding="utf-8"), str(path)) if path.is_file() else (value, "--json-schema")
    )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "--json-schema takes a JSON Schema or the path of a .json file holding one"
        ) from None


def _generate(args) -> None:
    from minillm import LLM, SamplingParams

    params = SamplingParams(  # first: a bad value fails before the model loads
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=args.stop or None,
        ignore_eos=args.ignore_eos,
        regex=args.regex,
        json_schema=_json_schema(args.json_schema),
        choice=args.choice,
    )
    engine_options = {k: getattr(args, k) for k in ENGINE_FLAGS if getattr(args, k) is not None}
    llm = LLM(
        args.model,
        stage=args.stage,
        device=args.device,
        dtype=args.dtype,
        load_format=args.load_format,
        seed=args.seed,
        **engine_options,
    )
    c = llm.config
    weights = " (random weights)" if args.load_format == "dummy" else ""
    dtype = str(c.torch_dtype).removeprefix("torch.")
    print(f"minillm: stage {c.stage}, model {args.model}{weights}, {c.device} {dtype}", file=sys.stderr)
    for prompt in args.prompts:
        sys.stdout.write(prompt)
        last = None
        for out in llm.stream([prompt], params):
            sys.stdout.write(out.delta_text)
            sys.stdout.flush()
            last = out
        m = last.metrics
        print(
            f"\n[{len(last.token_ids)} tokens, finish={last.finish_reason}, ttft {m.ttft * 1000:.1f} ms, "
            f"tpot {m.tpot * 1000:.2f} ms, e2e {m.e2e * 1000:.1f} ms]"
        )


def _bench(args) -> None:
    from minillm.bench import CHAPTERS, run_chapter

    chapters = sorted(CHAPTERS) if args.all else [args.chapter]
    for ch in chapters:
        out = Path(args.out) / f"ch{ch:02d}"
        run_chapter(
            ch,
            model=args.model,
            device=args.device,
            load_format=args.load_format,
            quick=args.quick,
            out=str(out),
            dtype=args.dtype,
            progress=not args.no_progress,
        )
        print(f"[chapter {ch}: results in {out}]\n")


def _serve(args) -> None:
    from minillm.server import serve

    engine_options = {k: getattr(args, k) for k in ENGINE_FLAGS if getattr(args, k) is not None}
    for flag in ("async_output", "async_scheduling"):
        if getattr(args, flag):
            engine_options[flag] = True
    serve(
        args.model_pos or args.model,
        stage=args.stage,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        served_model_name=args.served_model_name,
        chat_template=args.chat_template,
        load_format=args.load_format,
        log_level=args.log_level,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        **engine_options,
    )


def main(argv: list[str] | None = None) -> None:
    from minillm import DEFAULT_MODEL

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["bench", "serve"]:  # the serving benchmark has options of its own
        from minillm.bench.serve import main as bench_serve

        return bench_serve(argv[2:])

    parser = argparse.ArgumentParser(prog="minillm", description="An educational LLM inference engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    def engine_args(p):
        p.add_argument(
            "--model", default=DEFAULT_MODEL, help="checkpoint folder, or a named config with dummy"
        )
        p.add_argument("--load-format", default="auto", choices=["auto", "safetensors", "dummy"])
        p.add_argument("--device", default="cpu")
        p.add_argument("--dtype", choices=list(DTYPES), help="default: float32 on CPU, bfloat16 on CUDA")

    from minillm.config import DEFAULT_STAGE, DTYPES, STAGES

    g = sub.add_parser("generate", help="generate text from prompts")
    engine_args(g)
    g.add_argument("--stage", default=DEFAULT_STAGE, choices=list(STAGES))
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop", action="append", help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="run to --max-tokens even past end-of-sequence")
    constraint = g.add_argument_group("constrained decoding (chapter 5; at most one)")
    constraint.add_argument("--regex", help="the output matches this regular expression")
    constraint.add_argument(
        "--json-schema", metavar="SCHEMA", help="a JSON Schema, or the path of a .json file"
    )
    constraint.add_argument("--choice", action="append", help="the output is one of these (repeatable)")
    engine = g.add_argument_group("engine (default: the stage's preset)")
    for name, doc in ENGINE_FLAGS.items():
        engine.add_argument("--" + name.replace("_", "-"), type=int, metavar="N", help=doc)
    g.add_argument("prompts", nargs="+")
    g.set_defaults(func=_generate)

    b = sub.add_parser(
        "bench", help="run chapter benchmarks", epilog="The serving benchmark: minillm bench serve --help"
    )
    engine_args(b)
    which = b.add_mutually_exclusive_group(required=True)
    which.add_argument("--chapter", type=int)
    which.add_argument("--all", action="store_true", help="every landed chapter")
    b.add_argument("--quick", action="store_true", help="small sizes: seconds on a laptop CPU")
    b.add_argument("--out", default="results", help="folder for JSON, markdown and PNG results")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_bench)

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chapter 8)")
    engine_args(s)
    s.add_argument(
        "model_pos", nargs="?", metavar="MODEL", help="checkpoint folder or named config (or --model)"
    )
    s.add_argument("--stage", default=DEFAULT_STAGE, choices=list(STAGES))
    s.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port (the ready line names it)")
    s.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1 routes")
    s.add_argument("--served-model-name", help="the model's name in the API (default: the folder's name)")
    s.add_argument(
        "--chat-template", metavar="FILE", help="a Jinja chat template, for checkpoints without one"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve_engine = s.add_argument_group("engine (default: the stage's preset)")
    for name, doc in ENGINE_FLAGS.items():
        serve_engine.add_argument("--" + name.replace("_", "-"), type=int, metavar="N", help=doc)
    serve_engine.add_argument(
        "--async-output",
        action="store_true",
        help="detokenize and check stop strings of one step while the next computes (EngineConfig.async_output)",
    )
    serve_engine.add_argument(
        "--async-scheduling",
        action="store_true",
        help="schedule and launch the next step before this step's tokens reach the host"
        " (EngineConfig.async_scheduling)",
    )
    s.set_defaults(func=_serve)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as e:  # bad input: one clear line, no traceback
        parser.exit(2, f"minillm: error: {e}\n")


if __name__ == "__main__":
    main()
